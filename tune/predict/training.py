"""Training the predictor and measuring how well it generalises.

:func:`train` fits the calibration (NNLS over physical terms) and one XGBoost booster per
target on ``log(measured) - log(calibrated)``. :func:`cross_validate` reports three schemes:

* ``random``: 5-fold, rows shuffled (how well it interpolates);
* ``leave_one_model_out``: every architecture held out in turn, with its fine-tunes and
  quantised re-uploads (``nvidia/DeepSeek-R1-NVFP4`` goes out with ``deepseek-ai/DeepSeek-R1``),
  so "unseen" means an unseen architecture;
* ``leave_one_gpu_out``: every GPU system held out in turn.

Each scheme pools the out-of-fold predictions and reports, per target, the mean and median
absolute percentage error and the mean signed percentage error (positive = pessimistic, the
safe side for SLOs; negative = optimistic).

Example:
    >>> from tune.predict.perfdata import default_data_dir, load_measured
    >>> from tune.predict.training import train
    >>> predictor = train(load_measured(default_data_dir()))  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from tune.catalog.architectures import resolve_model
from tune.predict.calibration import TARGETS, fit_calibration
from tune.predict.features import Features, build_features
from tune.predict.perfdata import data_hash
from tune.predict.predictor import ARTIFACT_VERSION, Predictor

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SCHEMES", "XGB_PARAMS", "CVReport", "cross_validate", "train", "usable_rows"]

XGB_PARAMS: dict[str, Any] = {
    "objective": "reg:absoluteerror",
    "n_estimators": 450,
    "max_depth": 6,
    "learning_rate": 0.04,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "min_child_weight": 5,
    "reg_lambda": 3.0,
    "max_bin": 128,
    "tree_method": "hist",
}
SCHEMES = ("random", "leave_one_model_out", "leave_one_gpu_out")
# For a row whose architecture or GPU the boosters never saw, the learned residual is halved:
# trees cannot extrapolate, and on group cross-validation the half-way point between the
# calibrated physics and the full correction was the most accurate and about unbiased.
UNSEEN_RESIDUAL_WEIGHT = 0.5
_TARGET_COLUMN = {"ttft": "silicon_ttft_ms", "tpot": "silicon_tpot_ms"}


def _fit_booster(x: np.ndarray, y: np.ndarray, params: dict[str, Any], seed: int,
                 n_jobs: int) -> Any:
    import xgboost

    model = xgboost.XGBRegressor(**params, random_state=seed, n_jobs=n_jobs)
    model.fit(x, y)
    return model.get_booster()


def _fit(features: Features, measured: dict[str, np.ndarray], index: np.ndarray,
         params: dict[str, Any], seed: int, n_jobs: int) -> Predictor:
    physics = features.physics.take(index)
    roof = _take_roofline(features, index)
    calibration = fit_calibration(physics, roof, {t: measured[t][index] for t in TARGETS})
    boosters = {}
    for target in TARGETS:
        base = calibration.estimate(target, physics, roof)
        x = np.column_stack([features.matrix[index], np.log(base)]).astype(np.float32)
        y = np.log(measured[target][index]) - np.log(base)
        boosters[target] = _fit_booster(x, y, params, seed, n_jobs)
    frame = features.frame.iloc[index]
    seen = {
        "architectures": sorted({resolve_model(m).group for m in frame["model_path"].unique()}),
        "systems": sorted(frame["system"].str.lower().unique().tolist()),
        "unseen_residual_weight": UNSEEN_RESIDUAL_WEIGHT,
    }
    return Predictor(calibration, boosters, seen)


def _take_roofline(features: Features, index: np.ndarray):  # noqa: ANN202
    from dataclasses import fields

    from tune.predict.roofline import Roofline

    r = features.roofline
    return Roofline(**{f.name: getattr(r, f.name)[index] for f in fields(r)})


def _subset(features: Features, index: np.ndarray) -> Features:
    return Features(
        frame=features.frame.iloc[index].reset_index(drop=True),
        physics=features.physics.take(index),
        roofline=_take_roofline(features, index),
        matrix=features.matrix[index],
    )


def _measured(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return {t: frame[c].to_numpy(dtype=float) for t, c in _TARGET_COLUMN.items()}


def usable_rows(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The rows whose model and GPU the catalogs know, and a line per skipped group.

    A ``foundry bench`` CSV of a CPU deployment (``system=cpu``) or of a model outside the
    catalog is accepted but cannot train a GPU predictor; its rows are skipped, not fatal.
    """
    from tune.errors import TuneError
    from tune.catalog.hardware import get_gpu

    keep = np.ones(len(frame), dtype=bool)
    skipped = []
    for column, check in (("model_path", resolve_model), ("system", get_gpu)):
        for value in frame[column].astype(str).unique():
            try:
                check(value)
            except TuneError as exc:
                rows = (frame[column].astype(str) == value).to_numpy()
                keep &= ~rows
                skipped.append(f"{int(rows.sum())} rows with {column}={value!r}: {exc}")
    return frame[keep].reset_index(drop=True), skipped


def architecture_group(model_path: str) -> str:
    """Rows of the same architecture share a group (ids differ for fine-tunes and quants)."""
    return resolve_model(model_path).group


def train(
    frame: pd.DataFrame,
    *,
    params: dict[str, Any] | None = None,
    seed: int = 0,
    n_jobs: int = 1,
    cv: CVReport | None = None,
) -> Predictor:
    """Fit the predictor on every row of ``frame`` (measured-data schema).

    ``cv``, when given, is stored in the metadata so the artifacts say how accurate they are.
    """
    import xgboost

    params = {**XGB_PARAMS, **(params or {})}
    features = build_features(frame)
    predictor = _fit(features, _measured(frame), np.arange(len(frame)), params, seed, n_jobs)
    predictor.metadata = {
        **predictor.metadata,
        "artifact_version": ARTIFACT_VERSION,
        "created_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "training_rows": len(frame),
        "training_data_sha256": data_hash(frame),
        "training_sources": sorted(frame["source"].unique().tolist())
        if "source" in frame.columns else [],
        "models": sorted(frame["model_path"].astype(str).unique().tolist()),
        "xgboost_version": xgboost.__version__,
        "xgboost_params": params,
        "seed": seed,
        "target": "log(measured_ms) - log(calibrated_roofline_ms)",
        "cross_validation": cv.to_json() if cv else None,
    }
    return predictor


@dataclass(frozen=True)
class CVReport:
    """Pooled out-of-fold errors, in percent: ``results[scheme][target][metric]``."""

    results: dict[str, dict[str, dict[str, float]]]
    rows: int
    groups: dict[str, dict[str, dict[str, float]]]  # per held-out group: scheme -> group -> MAPE

    def to_json(self) -> dict[str, Any]:
        return {"rows": self.rows, "results": self.results, "groups": self.groups}

    def table_rows(self) -> list[list[str]]:
        """Scheme, target, MAPE, median APE, signed mean error: for printing."""
        out = []
        for scheme, by_target in self.results.items():
            for target, m in by_target.items():
                out.append([
                    scheme, target.upper(), f"{m['mape']:.1f}%", f"{m['median_ape']:.1f}%",
                    f"{m['signed_mean_error']:+.1f}%",
                ])
        return out


def _metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    rel = (pred - true) / true
    return {
        "mape": float(100 * np.mean(np.abs(rel))),
        "median_ape": float(100 * np.median(np.abs(rel))),
        "signed_mean_error": float(100 * np.mean(rel)),
        "n": int(len(true)),
    }


def cross_validate(
    frame: pd.DataFrame,
    *,
    schemes: tuple[str, ...] = SCHEMES,
    params: dict[str, Any] | None = None,
    folds: int = 5,
    seed: int = 0,
    n_jobs: int = 1,
) -> CVReport:
    """Out-of-fold accuracy of :func:`train`'s recipe under each scheme."""
    from sklearn.model_selection import KFold

    params = {**XGB_PARAMS, **(params or {})}
    frame = frame.reset_index(drop=True)
    features = build_features(frame)
    measured = _measured(frame)
    n = len(frame)
    results: dict[str, dict[str, dict[str, float]]] = {}
    groups_out: dict[str, dict[str, dict[str, float]]] = {}
    for scheme in schemes:
        if scheme == "random":
            splits = list(KFold(folds, shuffle=True, random_state=seed).split(np.arange(n)))
            labels = None
        else:
            if scheme == "leave_one_model_out":
                labels = frame["model_path"].map(architecture_group).to_numpy()
            elif scheme == "leave_one_gpu_out":
                labels = frame["system"].astype(str).str.lower().to_numpy()
            else:
                raise ValueError(f"unknown scheme {scheme!r}; known: {', '.join(SCHEMES)}")
            splits = [
                (np.flatnonzero(labels != g), np.flatnonzero(labels == g))
                for g in np.unique(labels)
            ]
        pred = {t: np.full(n, np.nan) for t in TARGETS}
        for train_idx, test_idx in splits:
            model = _fit(features, measured, train_idx, params, seed, n_jobs)
            out = model.predict_features(_subset(features, test_idx))
            for t in TARGETS:
                pred[t][test_idx] = out[t]
        results[scheme] = {t: _metrics(pred[t], measured[t]) for t in TARGETS}
        if labels is not None:
            groups_out[scheme] = {}
            for g in np.unique(labels):
                rows = labels == g
                groups_out[scheme][str(g)] = {
                    t: round(float(100 * np.mean(np.abs(pred[t][rows] / measured[t][rows] - 1))), 1)
                    for t in TARGETS
                } | {"n": int(rows.sum())}
    return CVReport(results=results, rows=n, groups=groups_out)
