"""The optimizer: predict TTFT/TPOT of LLM deployments and search for the best one.

    catalogs      hardware (GPUs), architectures (models), precision (numeric formats)
    physics       workload (rows -> physical quantities), roofline (lower bounds, memory fit)
    learning      features, calibration, predictor (shipped artifacts), training (fit + CV),
                  perfdata (finding measured data)
    search        space (candidates, evaluation), asktell, nsga2 (DEAP), operators, grid,
                  raytune (Ray Tune driver), optimize (front door), deploy (vLLM + Ray Serve)
    measuring     bench (closed-loop OpenAI-compatible load generator)

Names below are imported lazily, so ``import tune`` (and ``foundry --help``) stays fast.

Example:
    >>> import tune
    >>> tune.estimate("meta-llama/Llama-3.1-8B-Instruct", "h100_sxm", isl=1024, osl=256).fits
    True
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "GPU": "tune.hardware",
    "get_gpu": "tune.hardware",
    "Architecture": "tune.architectures",
    "resolve_model": "tune.architectures",
    "load_config_json": "tune.architectures",
    "estimate": "tune.roofline",
    "roofline": "tune.roofline",
    "Predictor": "tune.predictor",
    "train": "tune.training",
    "cross_validate": "tune.training",
    "load_measured": "tune.perfdata",
    "SearchSpace": "tune.space",
    "Candidate": "tune.space",
    "Evaluation": "tune.space",
    "Evaluator": "tune.space",
    "NSGA2Search": "tune.nsga2",
    "GridSearch": "tune.grid",
    "optimize": "tune.optimize",
    "choose_candidate": "tune.optimize",
    "deployment_spec": "tune.deploy",
    "BenchConfig": "tune.bench",
    "run_bench": "tune.bench",
    "bench_rows": "tune.bench",
    "TuneError": "tune.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tune' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
