"""Training the predictor and measuring how well it generalises.

:func:`train` fits the calibration (NNLS over physical terms) and XGBoost boosters on
``log(measured) - log(calibrated)``: per target, one (:data:`XGB_PARAMS`) for every row and,
where :data:`SEEN_PARAMS` sets other parameters for that target, a second one that predicts the
rows whose architecture and GPU were both trained on (interpolation rewards deeper trees that
would extrapolate worse). :func:`cross_validate` reports three schemes:

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

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from tune.catalog.architectures import resolve_model
from tune.predict.calibration import TARGETS, fit_calibration
from tune.predict.features import Features, build_features
from tune.predict.perfdata import data_hash
from tune.predict.predictor import (
    ARTIFACT_VERSION,
    CASES,
    DEFAULT_RISK,
    LEVELS,
    Predictor,
    derived_metrics,
    engine_keys,
)
from tune.predict.serving import pick, slo_violation

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "SCHEMES",
    "SEEN_PARAMS",
    "XGB_PARAMS",
    "CVReport",
    "cross_validate",
    "interval_metadata",
    "picking_evaluation",
    "train",
    "usable_rows",
]

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
# Overrides of XGB_PARAMS for the booster of seen rows, per target (none: one booster serves
# every case). TTFT: deeper trees on a pseudo-Huber loss (log scale, slope 0.3) interpolate
# better between a group's batch sizes: random 5-fold TTFT MAPE 18.5% -> 16.8% (median APE 9.4%
# -> 8.5%, p90 APE 46.3% -> 39.5%; 1.4-1.8 points at CV seeds 1-3, picking unchanged on
# average), but the same booster for unseen rows lowers unseen-GPU TTFT MAPE 43.4% -> 44.4%.
SEEN_PARAMS: dict[str, dict[str, Any]] = {
    "ttft": {"objective": "reg:pseudohubererror", "huber_slope": 0.3, "max_depth": 8},
}
SCHEMES = ("random", "leave_one_model_out", "leave_one_gpu_out")
# For a row whose architecture or GPU the boosters never saw, the learned residual is damped:
# trees cannot extrapolate. On group cross-validation (leave one model / GPU out) TTFT was most
# accurate at about half the correction and TPOT at three quarters (TPOT MAPE 24.1% -> 22.0%
# for an unseen GPU, unchanged for an unseen model).
UNSEEN_RESIDUAL_WEIGHT = {"ttft": 0.5, "tpot": 0.75}
# Unseen cases are shifted to be pessimistic by this much on average over the held-out groups
# (cross-validated: the mean relative error of each held-out group then stays >= 0 for both
# targets in leave-one-model-out and leave-one-GPU-out, at ~2-4 points of MAPE).
UNSEEN_SAFETY_MARGIN = 0.05
_TARGET_COLUMN = {"ttft": "silicon_ttft_ms", "tpot": "silicon_tpot_ms"}


def _fit_booster(x: np.ndarray, y: np.ndarray, params: dict[str, Any], seed: int,
                 n_jobs: int) -> Any:
    import xgboost

    model = xgboost.XGBRegressor(**params, random_state=seed, n_jobs=n_jobs)
    model.fit(x, y)
    return model.get_booster()


def _fit(features: Features, measured: dict[str, np.ndarray], index: np.ndarray,
         params: dict[str, Any], seed: int, n_jobs: int,
         seen_params: dict[str, dict[str, Any]]) -> Predictor:
    physics = features.physics.take(index)
    roof = _take_roofline(features, index)
    engines = engine_keys(features.frame)[index]
    calibration = fit_calibration(physics, roof, {t: measured[t][index] for t in TARGETS},
                                  engines)
    boosters, seen_boosters = {}, {}
    for target in TARGETS:
        base = calibration.estimate(target, physics, roof, engines)
        x = np.column_stack([features.matrix[index], np.log(base)]).astype(np.float32)
        y = np.log(measured[target][index]) - np.log(base)
        boosters[target] = _fit_booster(x, y, params, seed, n_jobs)
        if seen_params.get(target):
            seen_boosters[target] = _fit_booster(x, y, {**params, **seen_params[target]}, seed,
                                                 n_jobs)
    frame = features.frame.iloc[index]
    seen = {
        "architectures": sorted({resolve_model(m).group for m in frame["model_path"].unique()}),
        "systems": sorted(frame["system"].str.lower().unique().tolist()),
        "unseen_residual_weight": dict(UNSEEN_RESIDUAL_WEIGHT),
    }
    return Predictor(calibration, boosters, seen, seen_boosters)


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

    A ``foundry bench`` CSV of a system or a model outside the catalogs is accepted but
    cannot train the predictor; its rows are skipped, not fatal.
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
    seen_params: dict[str, dict[str, Any]] | None = None,
    seed: int = 0,
    n_jobs: int = 1,
    cv: CVReport | None = None,
) -> Predictor:
    """Fit the predictor on every row of ``frame`` (measured-data schema).

    ``params`` override :data:`XGB_PARAMS` for every booster; ``seen_params`` (default
    :data:`SEEN_PARAMS`; ``{}`` for one booster per target) then override them for the booster
    of seen rows. ``cv``, when given, is stored in the metadata so the artifacts say how
    accurate they are.
    """
    import xgboost

    params = {**XGB_PARAMS, **(params or {})}
    seen_params = SEEN_PARAMS if seen_params is None else seen_params
    features = build_features(frame)
    predictor = _fit(features, _measured(frame), np.arange(len(frame)), params, seed, n_jobs,
                     seen_params)
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
        "xgboost_seen_params": {t: {**params, **seen_params[t]}
                                for t in predictor.seen_boosters},
        "seed": seed,
        "target": "log(measured_ms) - log(calibrated_roofline_ms)",
        "cross_validation": cv.to_json() if cv else None,
        "intervals": interval_metadata(cv),
    }
    return predictor


@dataclass(frozen=True)
class CVReport:
    """Pooled out-of-fold errors, in percent: ``results[scheme][target][metric]``.

    ``intervals[scheme][target]`` are the quantiles (:data:`LEVELS`) of log(measured / raw
    prediction) pooled over the scheme's held-out rows (what :func:`train` stores per case);
    ``picking[scheme]`` is :func:`picking_evaluation` on the scheme's held-out predictions.
    """

    results: dict[str, dict[str, dict[str, float]]]
    rows: int
    groups: dict[str, dict[str, dict[str, float]]]  # per held-out group: scheme -> group -> MAPE
    intervals: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    shifts: dict[str, dict[str, float]] = field(default_factory=dict)
    picking: dict[str, dict[str, float]] = field(default_factory=dict)
    risk: float = DEFAULT_RISK
    picking_by_risk: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"rows": self.rows, "results": self.results, "groups": self.groups,
                "picking": self.picking, "risk": self.risk,
                "picking_by_risk": self.picking_by_risk}

    def table_rows(self) -> list[list[str]]:
        """Scheme, target, MAPE, median APE, p90 APE, signed mean error, p90 coverage."""
        out = []
        for scheme, by_target in self.results.items():
            for target, m in by_target.items():
                out.append([
                    scheme, target.upper(), f"{m['mape']:.1f}%", f"{m['median_ape']:.1f}%",
                    f"{m['p90_ape']:.1f}%", f"{m['signed_mean_error']:+.1f}%",
                    f"{m['p90_coverage']:.0f}%",
                ])
        return out

    def picking_rows(self) -> list[list[str]]:
        """Scheme, groups, met SLO, wrong picks, fallbacks, median regret: for printing."""
        return [[
            scheme, str(p["groups"]), f"{p['met_slo_pct']:.1f}%", str(p["wrong_picks"]),
            str(p["fallback_picks"]), f"{p['median_regret_pct']:.1f}%",
        ] for scheme, p in self.picking.items()]


def _metrics(pred: np.ndarray, true: np.ndarray, p90: np.ndarray) -> dict[str, float]:
    rel = (pred - true) / true
    return {
        "mape": float(100 * np.mean(np.abs(rel))),
        "median_ape": float(100 * np.median(np.abs(rel))),
        "p90_ape": float(100 * np.quantile(np.abs(rel), 0.9)),
        "signed_mean_error": float(100 * np.mean(rel)),
        "p90_coverage": float(100 * np.mean(true <= p90)),
        "n": int(len(true)),
    }


def picking_evaluation(
    frame: pd.DataFrame,
    pred: dict[str, np.ndarray],
    bound: dict[str, np.ndarray],
) -> dict[str, float]:
    """How the candidate chooser (``foundry optimize --candidates``) fares by the measured truth.

    Groups are the measured configurations of one model, GPU and workload (isl, osl) with at
    least two rows; the SLO is the group's median measured TTFT and TPOT. The chooser picks
    as :func:`tune.predict.serving.pick` does: the highest predicted (``pred``) output tokens/s
    per GPU among rows whose bound (``bound``) meets both SLOs, else the row whose bound is
    closest to them (a *fallback*: the chooser then reports that none is predicted to meet
    them). Per group: met = the pick meets both SLOs by the measured values; regret = 1 -
    measured throughput of the pick / best measured throughput among rows that meet the SLOs
    (100% for a pick that misses them). Groups where no row meets both medians are left out.
    ``frame`` holds normalised rows (:func:`tune.predict.schema.normalise`) and the targets.
    """
    measured = _measured(frame)
    _, tps_true = derived_metrics(measured["ttft"], measured["tpot"], frame)
    _, tps_pred = derived_metrics(pred["ttft"], pred["tpot"], frame)
    keys = frame["model_path"].astype(str) + "|" + frame["system"].astype(str) + "|" + \
        frame["isl"].astype(str) + "|" + frame["osl"].astype(str)
    met = wrong = fallback = 0
    regrets: list[float] = []
    for _, rows in keys.groupby(keys).groups.items():
        idx = np.asarray(rows)
        if len(idx) < 2:
            continue
        slo_ttft = float(np.median(measured["ttft"][idx]))
        slo_tpot = float(np.median(measured["tpot"][idx]))
        ok_true = (measured["ttft"][idx] <= slo_ttft) & (measured["tpot"][idx] <= slo_tpot)
        if not ok_true.any():
            continue
        best = float(tps_true[idx][ok_true].max())
        violation = slo_violation(bound["ttft"][idx], bound["tpot"][idx], slo_ttft_ms=slo_ttft,
                                  slo_tpot_ms=slo_tpot)
        chosen, predicted_ok = pick(tps_pred[idx], violation)
        fallback += not predicted_ok
        if ok_true[chosen]:
            met += 1
            regrets.append(1.0 - float(tps_true[idx][chosen]) / best)
        else:
            wrong += 1
            regrets.append(1.0)
    groups = met + wrong
    return {
        "groups": groups,
        "met_slo_pct": float(100 * met / groups) if groups else float("nan"),
        "wrong_picks": wrong,
        "fallback_picks": fallback,
        "median_regret_pct": float(100 * np.median(regrets)) if regrets else float("nan"),
        "median_regret_of_met_pct": float(100 * np.median(
            [r for r in regrets if r < 1.0] or [float("nan")])),
    }


def _splits(scheme: str, frame: pd.DataFrame, folds: int, seed: int):  # noqa: ANN202
    from sklearn.model_selection import KFold

    n = len(frame)
    if scheme == "random":
        if n < 2:
            return [], None, False
        splits = list(KFold(min(folds, n), shuffle=True, random_state=seed).split(np.arange(n)))
        labels = np.empty(n, dtype=object)
        for k, (_, test) in enumerate(splits):
            labels[test] = f"fold{k}"
        return splits, labels, False
    if scheme == "leave_one_model_out":
        labels = frame["model_path"].map(architecture_group).to_numpy()
    elif scheme == "leave_one_gpu_out":
        labels = frame["system"].astype(str).str.lower().to_numpy()
    else:
        raise ValueError(f"unknown scheme {scheme!r}; known: {', '.join(SCHEMES)}")
    groups = np.unique(labels)
    if len(groups) < 2:
        return [], None, True
    return [(np.flatnonzero(labels != g), np.flatnonzero(labels == g)) for g in groups], \
        labels, True


def cross_validate(
    frame: pd.DataFrame,
    *,
    schemes: tuple[str, ...] = SCHEMES,
    params: dict[str, Any] | None = None,
    seen_params: dict[str, dict[str, Any]] | None = None,
    folds: int = 5,
    seed: int = 0,
    n_jobs: int = 1,
    risk: float = DEFAULT_RISK,
    picking_risks: tuple[float, ...] = (),
) -> CVReport:
    """Out-of-fold accuracy of :func:`train`'s recipe under each scheme.

    ``picking_risks`` adds the picking evaluation at other risks (``picking_by_risk``).

    The point prediction and the bound of a held-out group are corrected with the *other*
    groups' held-out rows (:func:`point_shift` and the ``1 - risk`` quantile of
    log(measured / raw prediction)), as the trained predictor is with the whole scheme's, so
    no group's own error sets its correction.
    """
    params = {**XGB_PARAMS, **(params or {})}
    seen_params = SEEN_PARAMS if seen_params is None else seen_params
    frame = frame.reset_index(drop=True)
    features = build_features(frame)
    measured = _measured(frame)
    n = len(frame)
    results: dict[str, dict[str, dict[str, float]]] = {}
    groups_out: dict[str, dict[str, dict[str, float]]] = {}
    intervals: dict[str, dict[str, list[float]]] = {}
    shifts: dict[str, dict[str, float]] = {}
    picking_by_risk: dict[str, dict[str, dict[str, float]]] = {}
    picking: dict[str, dict[str, float]] = {}
    for scheme in schemes:
        splits, labels, grouped = _splits(scheme, frame, folds, seed)
        if not splits:  # one group (or one row): nothing to hold out
            continue
        log_pred = {t: np.full(n, np.nan) for t in TARGETS}
        for train_idx, test_idx in splits:
            model = _fit(features, measured, train_idx, params, seed, n_jobs, seen_params)
            out, _ = model.raw_log_predict(_subset(features, test_idx))
            for t in TARGETS:
                log_pred[t][test_idx] = out[t]
        point = {t: np.full(n, np.nan) for t in TARGETS}
        p90 = {t: np.full(n, np.nan) for t in TARGETS}
        bounds = {r: {t: np.full(n, np.nan) for t in TARGETS} for r in (risk, *picking_risks)}
        intervals[scheme], shifts[scheme] = {}, {}
        margin = 0.0 if scheme == "random" else UNSEEN_SAFETY_MARGIN
        for t in TARGETS:
            residual = np.log(measured[t]) - log_pred[t]
            intervals[scheme][t] = [float(q) for q in np.quantile(residual, LEVELS)]
            shifts[scheme][t] = point_shift(residual, margin)
            for _, test_idx in splits:
                others = np.ones(n, dtype=bool)
                others[test_idx] = False
                shift = point_shift(residual[others], margin)
                q90 = np.quantile(residual[others], 0.9)
                point[t][test_idx] = np.exp(log_pred[t][test_idx] + shift)
                p90[t][test_idx] = np.exp(log_pred[t][test_idx] + max(q90, shift))
                for r, bound in bounds.items():
                    qr = np.quantile(residual[others], 1.0 - r)
                    bound[t][test_idx] = np.exp(log_pred[t][test_idx] + (
                        shift if r == 0.5 else max(qr, shift) if r < 0.5 else qr))
        results[scheme] = {t: _metrics(point[t], measured[t], p90[t]) for t in TARGETS}
        picking[scheme] = picking_evaluation(features.frame, point, bounds[risk])
        for r in picking_risks:
            picking_by_risk.setdefault(f"{r:g}", {})[scheme] = picking_evaluation(
                features.frame, point, bounds[r])
        if grouped:
            groups_out[scheme] = {}
            for g in np.unique(labels):
                rows = labels == g
                groups_out[scheme][str(g)] = {
                    t: round(float(100 * np.mean(np.abs(point[t][rows] / measured[t][rows] - 1))), 1)
                    for t in TARGETS
                } | {f"{t}_signed": round(float(100 * np.mean(point[t][rows] / measured[t][rows] - 1)), 1)
                     for t in TARGETS} | {"n": int(rows.sum())}
    return CVReport(results=results, rows=n, groups=groups_out, intervals=intervals,
                    shifts=shifts, picking=picking, risk=risk, picking_by_risk=picking_by_risk)


def point_shift(residual: np.ndarray, margin: float) -> float:
    """The log shift that makes the mean relative error of shifted predictions ``margin``:
    with r = log(measured / predicted), mean(exp(-r - s)) = 1 + margin."""
    return float(np.log1p(margin) - np.log(np.mean(np.exp(-residual))))


def interval_metadata(cv: CVReport | None) -> dict[str, Any] | None:
    """Per-case quantiles for the predictor's metadata, from a report holding every scheme:
    seen <- random folds, unseen_model <- leave one model out, unseen_gpu <- leave one GPU
    out, unseen_model_gpu <- both (log errors of independent causes add: q_model + q_gpu -
    q_seen, level by level)."""
    if cv is None or "random" not in cv.intervals:
        return None
    zero = {t: [0.0] * len(LEVELS) for t in TARGETS}
    seen = cv.intervals["random"]
    model = cv.intervals.get("leave_one_model_out")
    gpu = cv.intervals.get("leave_one_gpu_out")
    both = {t: [m + g - s for m, g, s in zip(model[t], gpu[t], seen[t], strict=True)]
            for t in TARGETS} if model and gpu else None
    quantiles = {CASES[0]: seen, CASES[1]: model or zero, CASES[2]: gpu or zero,
                 CASES[3]: both or zero}
    missing = [c for c, q in zip(CASES[1:], (model, gpu, both), strict=True) if not q]
    s_seen = cv.shifts["random"]
    s_model = cv.shifts.get("leave_one_model_out")
    s_gpu = cv.shifts.get("leave_one_gpu_out")
    s_both = {t: s_model[t] + s_gpu[t] - s_seen[t] for t in TARGETS} if s_model and s_gpu else None
    no_shift = dict.fromkeys(TARGETS, 0.0)
    shifts = {CASES[0]: s_seen, CASES[1]: s_model or no_shift, CASES[2]: s_gpu or no_shift,
              CASES[3]: s_both or no_shift}
    return {"levels": list(LEVELS), "quantiles": quantiles, "shifts": shifts, "missing": missing}
