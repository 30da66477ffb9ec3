"""The learned TTFT/TPOT predictor, its uncertainty and its versioned JSON artifacts.

Prediction = calibrated roofline with its engine offset (:mod:`tune.predict.calibration`) x
exp(learned residual + case shift), where the residual comes from an XGBoost booster per
target trained on log(measured / calibrated) over the physics features of
:mod:`tune.predict.features`. A target may have a second booster for ``seen`` rows (tuned to
interpolate; :data:`tune.predict.training.SEEN_PARAMS`); the first predicts the other cases.

Every row falls in one *case*, by what the training data held:

    seen              its architecture and its GPU both had training rows
    unseen_model      the GPU had rows, the architecture did not
    unseen_gpu        the architecture had rows, the GPU did not
    unseen_model_gpu  neither

For an unseen architecture or GPU the learned residual is weighted down
(``unseen_residual_weight``, per target: trees cannot extrapolate); the engine offset is not.
The uncertainty of each case is measured by cross-validation when the predictor is trained
(random folds for ``seen``, leave one model out for ``unseen_model``, leave one GPU out for
``unseen_gpu``; the sum of both for ``unseen_model_gpu``) and stored as quantiles of log(measured / predicted): the point prediction
is shifted so that its mean relative error over the held-out rows is 0 (seen) or +5% (unseen
cases: pessimistic, the safe side for an SLO), and the bound at risk ``r`` is the ``1 - r``
quantile (``pred_ttft_ms_p90`` and ``pred_tpot_ms_p90`` at
``r = 0.1``): a split-conformal interval per case.

Artifacts (the shipped ones in ``tune/artifacts/``; trained versions in
``$FOUNDRY_HOME/tune/versions/<version>/``, see :class:`ArtifactStore`):

* ``ttft.json``, ``tpot.json``: the boosters (``xgboost.Booster.save_model`` JSON);
* ``ttft_seen.json`` (targets listed in the metadata's ``seen_boosters``): the booster of
  seen rows;
* ``metadata.json``: artifact version, feature names, calibration coefficients, interval
  quantiles, training-data hash, size and sources, xgboost parameters and version, and the
  cross-validation report.

Example:
    >>> import pandas as pd
    >>> from tune.predict.predictor import Predictor
    >>> out = Predictor.load().predict(pd.DataFrame([{"model_path": "Qwen/Qwen3-32B",
    ...     "system": "h100_sxm", "isl": 1024, "osl": 256, "batch_size": 8, "tp_size": 2}]))
    >>> list(out.columns[-7:])  # doctest: +NORMALIZE_WHITESPACE
    ['pred_ttft_ms', 'pred_tpot_ms', 'pred_e2e_ms', 'pred_output_tps_per_gpu',
     'pred_ttft_ms_p90', 'pred_tpot_ms_p90', 'pred_case']
    >>> bool((out.pred_ttft_ms_p90 >= out.pred_ttft_ms).all())
    True
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tune.errors import ArtifactError, InvalidInput
from tune.predict.calibration import TARGETS, Calibration
from tune.predict.features import FEATURE_NAMES, Features, build_features
from tune.predict.serving import e2e_ms, output_tps_per_gpu

if TYPE_CHECKING:
    import pandas as pd
    import xgboost

__all__ = [
    "ARTIFACT_DIR",
    "ARTIFACT_VERSION",
    "CASES",
    "DEFAULT_RISK",
    "LEVELS",
    "ArtifactStore",
    "Predictor",
    "derived_metrics",
    "engine_keys",
]

ARTIFACT_DIR = Path(__file__).resolve().parents[1] / "artifacts"
ARTIFACT_VERSION = 4  # bump when features, calibration terms or interval fields change meaning
# version 3 is version 4 without seen boosters (one booster per target for every case);
# version 2 is version 3 without engine offsets (read as no offset)
READABLE_ARTIFACT_VERSIONS = (2, 3, ARTIFACT_VERSION)
METADATA_FILE = "metadata.json"
CASES = ("seen", "unseen_model", "unseen_gpu", "unseen_model_gpu")
LEVELS = tuple(round(q / 100, 2) for q in range(1, 100))  # stored quantile levels
DEFAULT_RISK = 0.1  # SLO feasibility is judged on the 90th percentile by default


def derived_metrics(
    ttft_ms: np.ndarray, tpot_ms: np.ndarray, frame: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray]:
    """(e2e_ms, output tokens/s per GPU) of rows (see :mod:`tune.predict.serving`)."""
    osl = frame["osl"].to_numpy(dtype=float)
    e2e = e2e_ms(ttft_ms, tpot_ms, osl)
    gpus = (
        frame["tp_size"].to_numpy(dtype=float)
        * frame["pp_size"].to_numpy(dtype=float)
        * frame["attention_dp_size"].to_numpy(dtype=float)
    )
    tps = output_tps_per_gpu(frame["batch_size"].to_numpy(dtype=float), osl, e2e, gpus)
    return e2e, tps


def engine_keys(frame: pd.DataFrame) -> np.ndarray:
    """Each normalised row's serving engine, the key of the calibration's engine offsets."""
    return frame["backend"].astype(str).str.lower().to_numpy().astype(str)


def check_risk(risk: float) -> float:
    """``risk`` is the accepted chance of missing an SLO: strictly between 0 and 1."""
    if not 0.0 < float(risk) < 1.0:
        raise InvalidInput(f"risk must be between 0 and 1 (exclusive), got {risk}")
    return float(risk)


@dataclass
class Predictor:
    """Calibration plus a residual booster per target (and, for some targets, one for seen
    rows: ``seen_boosters``), with per-case interval quantiles."""

    calibration: Calibration
    boosters: dict[str, xgboost.Booster]
    metadata: dict[str, Any] = field(default_factory=dict)
    seen_boosters: dict[str, xgboost.Booster] = field(default_factory=dict)

    # ----- persistence ------------------------------------------------------------------
    @classmethod
    def load(cls, directory: str | Path | None = None) -> Predictor:
        """Load artifacts: ``directory``, else the active version of the default
        :class:`ArtifactStore` if there is one, else the shipped ``tune/artifacts``."""
        if directory is not None:
            root = Path(directory)
        else:
            root = ArtifactStore.default().active_path() or ARTIFACT_DIR
        meta_path = root / METADATA_FILE
        if not meta_path.is_file():
            raise ArtifactError(
                f"no predictor artifacts in {root}; train them with `foundry tune train`"
            )
        try:
            metadata = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"{meta_path} is not valid JSON: {exc}") from exc
        if metadata.get("artifact_version") not in READABLE_ARTIFACT_VERSIONS:
            raise ArtifactError(
                f"{meta_path} has artifact version {metadata.get('artifact_version')}, this "
                f"code reads versions {READABLE_ARTIFACT_VERSIONS}; retrain with `foundry tune train`"
            )
        if metadata.get("feature_names") != FEATURE_NAMES:
            raise ArtifactError(f"{meta_path} was trained on other features; retrain")
        boosters = {t: _load_booster(root / f"{t}.json") for t in TARGETS}
        seen_boosters = {t: _load_booster(root / f"{t}_seen.json")
                         for t in metadata.get("seen_boosters", [])}
        metadata.setdefault("loaded_from", str(root))
        return cls(Calibration.from_json(metadata["calibration"]), boosters, metadata,
                   seen_boosters)

    def save(self, directory: str | Path | None = None) -> list[Path]:
        """Write the artifacts; returns the files written."""
        root = Path(directory) if directory else ARTIFACT_DIR
        root.mkdir(parents=True, exist_ok=True)
        written = []
        boosters = [(f"{t}.json", b) for t, b in self.boosters.items()]
        boosters += [(f"{t}_seen.json", b) for t, b in self.seen_boosters.items()]
        for name, booster in boosters:
            path = root / name
            booster.save_model(str(path))
            written.append(path)
        metadata = {
            **{k: v for k, v in self.metadata.items() if k != "loaded_from"},
            "artifact_version": ARTIFACT_VERSION,
            "seen_boosters": sorted(self.seen_boosters),
            "feature_names": FEATURE_NAMES,
            "calibration": self.calibration.to_json(),
        }
        meta_path = root / METADATA_FILE
        meta_path.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
        written.append(meta_path)
        return written

    # ----- cases and intervals ----------------------------------------------------------
    def cases(self, frame: pd.DataFrame) -> np.ndarray:
        """The case of every (normalised) row: see the module docstring."""
        import pandas as pd

        from tune.catalog.architectures import resolve_model

        archs = set(self.metadata.get("architectures", []))
        systems = set(self.metadata.get("systems", []))
        codes, models = pd.factorize(frame["model_path"])
        known_model = np.array([resolve_model(m).group in archs for m in models], dtype=bool)
        known_model = known_model[codes] if len(models) else np.zeros(len(frame), dtype=bool)
        known_gpu = frame["system"].str.lower().isin(systems).to_numpy()
        out = np.where(known_model, np.where(known_gpu, CASES[0], CASES[2]),
                       np.where(known_gpu, CASES[1], CASES[3]))
        return out.astype(object)

    def _quantile(self, target: str, cases: np.ndarray, level: float) -> np.ndarray:
        """log(measured / raw prediction) at ``level`` for each row's case (0 when the
        artifacts carry no intervals, i.e. were trained without cross-validation)."""
        intervals = self.metadata.get("intervals") or {}
        levels = intervals.get("levels")
        out = np.zeros(len(cases))
        if not levels:
            return out
        for case in CASES:
            rows = cases == case
            if rows.any():
                q = intervals["quantiles"][case][target]
                out[rows] = float(np.interp(level, levels, q))
        return out

    def _shift(self, target: str, cases: np.ndarray) -> np.ndarray:
        """The log shift of each row's point prediction (0 without intervals)."""
        shifts = (self.metadata.get("intervals") or {}).get("shifts") or {}
        out = np.zeros(len(cases))
        for case, by_target in shifts.items():
            out[cases == case] = float(by_target[target])
        return out

    def residual_weights(self, cases: np.ndarray, target: str) -> np.ndarray:
        """1 where the case is seen, ``unseen_residual_weight`` (per target, or one number for
        both) elsewhere."""
        weight = self.metadata.get("unseen_residual_weight", 1.0)
        if isinstance(weight, dict):
            weight = weight.get(target, 1.0)
        return np.where(cases == CASES[0], 1.0, float(weight))

    # ----- prediction -------------------------------------------------------------------
    def raw_log_predict(self, features: Features) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """(log of the unshifted prediction per target, case per row)."""
        cases = self.cases(features.frame)
        seen = cases == CASES[0]
        out = {}
        for target in TARGETS:
            base = self.calibration.estimate(target, features.physics, features.roofline,
                                             engine_keys(features.frame))
            x = np.column_stack([features.matrix, np.log(base)]).astype(np.float32)
            residual = np.asarray(self.boosters[target].inplace_predict(x), dtype=float)
            own = self.seen_boosters.get(target)
            if own is not None and seen.any():
                residual[seen] = own.inplace_predict(x[seen])
            out[target] = np.log(base) + self.residual_weights(cases, target) * residual
        return out, cases

    def predict_features(
        self, features: Features, *, risk: float = DEFAULT_RISK
    ) -> dict[str, np.ndarray]:
        """Per target: the point prediction (``"ttft"``, ``"tpot"``), the p90 bound
        (``"ttft_p90"``) and the bound at ``risk`` (``"ttft_bound"``), in ms; ``"case"``."""
        check_risk(risk)
        log_pred, cases = self.raw_log_predict(features)
        out: dict[str, np.ndarray] = {"case": cases}
        for target in TARGETS:
            lp = log_pred[target]
            out[target] = np.exp(lp + self._shift(target, cases))
            p90 = np.exp(lp + self._quantile(target, cases, 0.9))
            bound = np.exp(lp + self._quantile(target, cases, 1.0 - risk))
            out[f"{target}_p90"] = np.maximum(p90, out[target])
            # risk 0.5 is the point prediction; a smaller risk is never below it
            out[f"{target}_bound"] = (out[target] if risk == 0.5 else
                                      np.maximum(bound, out[target]) if risk < 0.5 else bound)
        return out

    def predict(
        self, frame: pd.DataFrame, *, gpus: dict | None = None, risk: float = DEFAULT_RISK
    ) -> pd.DataFrame:
        """``frame`` as given (every column carried through) plus the prediction columns
        (:data:`tune.predict.schema.PREDICTION_COLUMNS`).

        Raises :class:`tune.errors.TuneError` subclasses naming the offending row; see
        :meth:`predict_valid` to skip invalid rows instead.
        """
        features = build_features(frame, gpus=gpus)
        pred = self.predict_features(features, risk=risk)
        e2e, tps = derived_metrics(pred["ttft"], pred["tpot"], features.frame)
        out = frame.reset_index(drop=True)
        return out.assign(
            pred_ttft_ms=pred["ttft"], pred_tpot_ms=pred["tpot"], pred_e2e_ms=e2e,
            pred_output_tps_per_gpu=tps, pred_ttft_ms_p90=pred["ttft_p90"],
            pred_tpot_ms_p90=pred["tpot_p90"], pred_case=pred["case"],
        )

    def predict_valid(
        self, frame: pd.DataFrame, *, gpus: dict | None = None, risk: float = DEFAULT_RISK
    ) -> tuple[pd.DataFrame, dict[int, str]]:
        """Predictions for the valid rows, and every invalid row's position (0-based in
        ``frame``) with the reason. The returned frame keeps the valid rows' order."""
        from tune.predict.workload import invalid_rows

        invalid = invalid_rows(frame, gpus=gpus)
        keep = np.setdiff1d(np.arange(len(frame)), np.fromiter(invalid, dtype=int))
        if not len(keep):
            return frame.iloc[0:0].assign(**{c: [] for c in _PREDICTED}), invalid
        return self.predict(frame.iloc[keep], gpus=gpus, risk=risk), invalid


def _load_booster(path: Path) -> xgboost.Booster:
    import xgboost

    booster = xgboost.Booster()
    try:
        booster.load_model(str(path))
    except xgboost.core.XGBoostError as exc:
        raise ArtifactError(f"cannot load {path}: {exc}") from exc
    booster.set_param({"nthread": 1})
    return booster


_PREDICTED = (
    "pred_ttft_ms", "pred_tpot_ms", "pred_e2e_ms", "pred_output_tps_per_gpu",
    "pred_ttft_ms_p90", "pred_tpot_ms_p90", "pred_case",
)


class ArtifactStore:
    """Trained predictor versions under one directory (``$FOUNDRY_HOME/tune`` by default)::

        versions/v0001/{ttft.json, tpot.json, ttft_seen.json, metadata.json}
        versions/v0002/...
        active            the name of the version that predicts (one line)

    A new version is written in full, then ``active`` is replaced atomically, so a crash
    leaves the previous version predicting. Without ``active`` the shipped artifacts predict.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    @classmethod
    def default(cls) -> ArtifactStore:
        home = os.environ.get("FOUNDRY_HOME") or Path.home() / ".foundry"
        return cls(Path(home) / "tune")

    @property
    def versions_dir(self) -> Path:
        return self.root / "versions"

    def versions(self) -> list[str]:
        if not self.versions_dir.is_dir():
            return []
        return sorted(p.name for p in self.versions_dir.iterdir()
                      if re.fullmatch(r"v\d{4,}", p.name) and (p / METADATA_FILE).is_file())

    def active(self) -> str | None:
        path = self.root / "active"
        if not path.is_file():
            return None
        name = path.read_text().strip()
        return name if name in self.versions() else None

    def active_path(self) -> Path | None:
        name = self.active()
        return self.versions_dir / name if name else None

    def add(self, predictor: Predictor, *, activate: bool = True) -> str:
        """Write ``predictor`` as the next version (and make it active); returns its name."""
        existing = [int(v[1:]) for v in self.versions()]
        name = f"v{(max(existing) + 1) if existing else 1:04d}"
        staging = self.versions_dir / f".{name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        predictor.metadata = {**predictor.metadata, "version": name}
        predictor.save(staging)
        staging.rename(self.versions_dir / name)
        if activate:
            self.activate(name)
        return name

    def activate(self, name: str) -> None:
        if name not in self.versions():
            raise ArtifactError(f"no predictor version {name!r} in {self.versions_dir}; "
                                f"known: {', '.join(self.versions()) or 'none'}")
        tmp = self.root / ".active.tmp"
        tmp.write_text(name + "\n")
        os.replace(tmp, self.root / "active")

    def metadata(self, name: str) -> dict[str, Any]:
        return json.loads((self.versions_dir / name / METADATA_FILE).read_text())
