"""The optimizer: predict TTFT/TPOT of LLM deployments and search for the best one.

    tune.catalog  hardware (GPUs), architectures (models), precision (numeric formats)
    tune.predict  schema, roofline, workload, estimate, serving (E2E/throughput/SLO formulas),
                  features, calibration, perfdata, predictor (p90 bounds, versioned
                  artifacts), training (fit, cross-validation, picking evaluation)
    tune.search   space, asktell, operators, nsga2 (DEAP), grid, deploy (vLLM + Ray Serve),
                  raytune (Ray Tune driver), optimize (front door)
    tune.bench    closed-loop OpenAI-compatible load generator (measuring the truth)
    tune.cli      the foundry commands
    tune.errors   the error tree every layer raises

Each layer imports only the ones listed before it (an import-linter contract checks it).
The flat module paths of earlier releases (``tune.predictor``, ``tune.space``, ...) still
import (:mod:`tune._moved`).

Names below are imported lazily, so ``import tune`` (and ``foundry --help``) stays fast.

Example:
    >>> import tune
    >>> tune.estimate("meta-llama/Llama-3.1-8B-Instruct", "h100_sxm", isl=1024, osl=256).fits
    True
"""

from __future__ import annotations

import importlib
from typing import Any

from tune import _moved

__version__ = "0.1.0"

_EXPORTS = {
    "GPU": "tune.catalog.hardware",
    "get_gpu": "tune.catalog.hardware",
    "Architecture": "tune.catalog.architectures",
    "resolve_model": "tune.catalog.architectures",
    "load_config_json": "tune.catalog.architectures",
    "estimate": "tune.predict.estimate",
    "roofline": "tune.predict.roofline",
    "Predictor": "tune.predict.predictor",
    "train": "tune.predict.training",
    "cross_validate": "tune.predict.training",
    "load_measured": "tune.predict.perfdata",
    "SearchSpace": "tune.search.space",
    "Candidate": "tune.search.space",
    "Evaluation": "tune.search.space",
    "Evaluator": "tune.search.space",
    "NSGA2Search": "tune.search.nsga2",
    "GridSearch": "tune.search.grid",
    "optimize": "tune.search.optimize",
    "choose_candidate": "tune.search.optimize",
    "deployment_spec": "tune.search.deploy",
    "BenchConfig": "tune.bench",
    "run_bench": "tune.bench",
    "bench_rows": "tune.bench",
    "TuneError": "tune.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]

_moved.install()


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tune' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
