"""Prediction: TTFT and TPOT of a deployment from physics plus what measurements taught.

Import order (each module imports only those above it)::

    schema       the measured-data columns; normalising rows
    roofline     Physics -> roofline lower bounds and memory fit (arrays)
    workload     rows -> Physics, through the catalogs
    estimate     the roofline of one deployment (scalar front door)
    serving      E2E, throughput per GPU and SLO violation from TTFT/TPOT (written once)
    features     physics features of the learned model (no names)
    calibration  non-negative efficiencies and costs over the roofline terms
    perfdata     finding and reading measured data
    predictor    calibration x learned residual, with p90 bounds; versioned artifacts
    training     fitting, cross-validation and the picking evaluation

Names are imported lazily so ``import tune.predict`` does not pull in pandas or xgboost.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "normalise": "tune.predict.schema",
    "Physics": "tune.predict.roofline",
    "Roofline": "tune.predict.roofline",
    "roofline": "tune.predict.roofline",
    "memory_fit": "tune.predict.roofline",
    "resolve": "tune.predict.workload",
    "physics_from_frame": "tune.predict.workload",
    "Estimate": "tune.predict.estimate",
    "estimate": "tune.predict.estimate",
    "e2e_ms": "tune.predict.serving",
    "output_tps_per_gpu": "tune.predict.serving",
    "slo_violation": "tune.predict.serving",
    "build_features": "tune.predict.features",
    "Calibration": "tune.predict.calibration",
    "load_measured": "tune.predict.perfdata",
    "default_data_dir": "tune.predict.perfdata",
    "Predictor": "tune.predict.predictor",
    "train": "tune.predict.training",
    "cross_validate": "tune.predict.training",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tune.predict' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
