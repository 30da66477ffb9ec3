"""The learned TTFT/TPOT predictor and its versioned JSON artifacts.

Prediction = calibrated roofline (:mod:`tune.predict.calibration`) x exp(learned residual), where the
residual comes from one XGBoost booster per target trained on log(measured / calibrated) over
the physics features of :mod:`tune.predict.features`. For an architecture or GPU absent from the
training data the residual is weighted down (``unseen_residual_weight`` in the metadata).

Artifacts (in ``tune/artifacts/`` by default, shipped in the package):

* ``ttft.json``, ``tpot.json``: the boosters (``xgboost.Booster.save_model`` JSON);
* ``metadata.json``: artifact version, feature names, calibration coefficients, training-data
  hash and size, xgboost parameters and version, and the cross-validation report.

Example:
    >>> import pandas as pd
    >>> from tune.predict.predictor import Predictor
    >>> out = Predictor.load().predict(pd.DataFrame([{"model_path": "Qwen/Qwen3-32B",
    ...     "system": "h100_sxm", "isl": 1024, "osl": 256, "batch_size": 8, "tp_size": 2}]))
    >>> list(out.columns[-4:])
    ['pred_ttft_ms', 'pred_tpot_ms', 'pred_e2e_ms', 'pred_output_tps_per_gpu']
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tune.predict.calibration import TARGETS, Calibration
from tune.errors import ArtifactError
from tune.predict.features import FEATURE_NAMES, Features, build_features
from tune.predict.serving import e2e_ms, output_tps_per_gpu

if TYPE_CHECKING:
    import pandas as pd
    import xgboost

__all__ = ["ARTIFACT_DIR", "ARTIFACT_VERSION", "Predictor", "derived_metrics"]

ARTIFACT_DIR = Path(__file__).resolve().parents[1] / "artifacts"
ARTIFACT_VERSION = 1  # bump when features or the calibration terms change meaning
METADATA_FILE = "metadata.json"


def derived_metrics(
    ttft_ms: np.ndarray, tpot_ms: np.ndarray, frame: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray]:
    """(e2e_ms, output tokens/s per GPU) as the issue defines them:
    e2e = ttft + (osl - 1) * tpot; tokens/s/GPU = batch * osl / e2e_s / (tp * pp * dp)."""
    osl = frame["osl"].to_numpy(dtype=float)
    e2e = e2e_ms(ttft_ms, tpot_ms, osl)
    gpus = (
        frame["tp_size"].to_numpy(dtype=float)
        * frame["pp_size"].to_numpy(dtype=float)
        * frame["attention_dp_size"].to_numpy(dtype=float)
    )
    tps = output_tps_per_gpu(frame["batch_size"].to_numpy(dtype=float), osl, e2e, gpus)
    return e2e, tps


@dataclass
class Predictor:
    """Calibration plus one residual booster per target."""

    calibration: Calibration
    boosters: dict[str, xgboost.Booster]
    metadata: dict[str, Any] = field(default_factory=dict)

    # ----- persistence ------------------------------------------------------------------
    @classmethod
    def load(cls, directory: str | Path | None = None) -> Predictor:
        """Load artifacts (default: the ones shipped in ``tune/artifacts``)."""
        import xgboost

        root = Path(directory) if directory else ARTIFACT_DIR
        meta_path = root / METADATA_FILE
        if not meta_path.is_file():
            raise ArtifactError(
                f"no predictor artifacts in {root}; train them with "
                "`foundry tune train --data DIR`"
            )
        try:
            metadata = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"{meta_path} is not valid JSON: {exc}") from exc
        if metadata.get("artifact_version") != ARTIFACT_VERSION:
            raise ArtifactError(
                f"{meta_path} has artifact version {metadata.get('artifact_version')}, this "
                f"code reads version {ARTIFACT_VERSION}; retrain with `foundry tune train`"
            )
        if metadata.get("feature_names") != FEATURE_NAMES:
            raise ArtifactError(f"{meta_path} was trained on other features; retrain")
        boosters = {}
        for target in TARGETS:
            booster = xgboost.Booster()
            try:
                booster.load_model(str(root / f"{target}.json"))
            except xgboost.core.XGBoostError as exc:
                raise ArtifactError(f"cannot load {root / f'{target}.json'}: {exc}") from exc
            booster.set_param({"nthread": 1})
            boosters[target] = booster
        return cls(Calibration.from_json(metadata["calibration"]), boosters, metadata)

    def save(self, directory: str | Path | None = None) -> list[Path]:
        """Write the artifacts; returns the files written."""
        root = Path(directory) if directory else ARTIFACT_DIR
        root.mkdir(parents=True, exist_ok=True)
        written = []
        for target, booster in self.boosters.items():
            path = root / f"{target}.json"
            booster.save_model(str(path))
            written.append(path)
        metadata = {
            **self.metadata,
            "artifact_version": ARTIFACT_VERSION,
            "feature_names": FEATURE_NAMES,
            "calibration": self.calibration.to_json(),
        }
        meta_path = root / METADATA_FILE
        meta_path.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
        written.append(meta_path)
        return written

    # ----- prediction -------------------------------------------------------------------
    def residual_weights(self, frame: pd.DataFrame) -> np.ndarray:
        """1 where the training data had the row's architecture and GPU, less where it did not
        (metadata ``unseen_residual_weight``): there the calibrated physics is trusted more."""
        import pandas as pd

        from tune.catalog.architectures import resolve_model

        weight = float(self.metadata.get("unseen_residual_weight", 1.0))
        archs = set(self.metadata.get("architectures", []))
        systems = set(self.metadata.get("systems", []))
        if weight == 1.0 or not archs or not systems:
            return np.ones(len(frame))
        codes, models = pd.factorize(frame["model_path"])
        known_model = np.array([resolve_model(m).group in archs for m in models])[codes]
        known_gpu = frame["system"].str.lower().isin(systems).to_numpy()
        return np.where(known_model & known_gpu, 1.0, weight)

    def predict_features(self, features: Features) -> dict[str, np.ndarray]:
        """Predicted milliseconds per target for already-built features."""
        out = {}
        weights = self.residual_weights(features.frame)
        for target in TARGETS:
            base = self.calibration.estimate(target, features.physics, features.roofline)
            x = np.column_stack([features.matrix, np.log(base)]).astype(np.float32)
            residual = np.asarray(self.boosters[target].inplace_predict(x), dtype=float)
            out[target] = base * np.exp(weights * residual)
        return out

    def predict(self, frame: pd.DataFrame, *, gpus: dict | None = None) -> pd.DataFrame:
        """``frame`` as given (every column carried through) plus the four prediction columns.

        Raises :class:`tune.errors.TuneError` subclasses naming the offending row.
        """
        features = build_features(frame, gpus=gpus)
        pred = self.predict_features(features)
        e2e, tps = derived_metrics(pred["ttft"], pred["tpot"], features.frame)
        out = frame.reset_index(drop=True)
        return out.assign(
            pred_ttft_ms=pred["ttft"], pred_tpot_ms=pred["tpot"], pred_e2e_ms=e2e,
            pred_output_tps_per_gpu=tps,
        )
