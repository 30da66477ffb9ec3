"""Versioned predictor artifacts under $FOUNDRY_HOME/tune, and the picking evaluation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tune.errors import ArtifactError
from tune.predict.predictor import ARTIFACT_DIR, ArtifactStore, Predictor
from tune.predict.training import picking_evaluation


@pytest.fixture()
def store(tmp_path, monkeypatch) -> ArtifactStore:
    monkeypatch.setenv("FOUNDRY_HOME", str(tmp_path))
    return ArtifactStore.default()


def test_without_an_active_version_the_shipped_artifacts_predict(store: ArtifactStore):
    assert store.active() is None and store.versions() == []
    assert Predictor.load().metadata["loaded_from"] == str(ARTIFACT_DIR)


def test_versions_are_numbered_and_the_active_one_predicts(store: ArtifactStore):
    shipped = Predictor.load(ARTIFACT_DIR)
    first = store.add(shipped)
    second = store.add(shipped, activate=False)
    assert (first, second) == ("v0001", "v0002") and store.versions() == [first, second]
    assert store.active() == first
    loaded = Predictor.load()
    assert loaded.metadata["version"] == first
    assert loaded.metadata["loaded_from"] == str(store.versions_dir / first)
    store.activate(second)
    assert Predictor.load().metadata["version"] == second
    with pytest.raises(ArtifactError, match="v0009"):
        store.activate("v0009")


def test_a_half_written_version_is_never_active(store: ArtifactStore):
    store.add(Predictor.load(ARTIFACT_DIR))
    partial = store.versions_dir / ".v0002.partial"
    partial.mkdir()
    (partial / "ttft.json").write_text("{")
    assert store.versions() == ["v0001"] and store.active() == "v0001"
    assert store.add(Predictor.load(ARTIFACT_DIR)) == "v0002"  # the leftover is replaced
    assert store.active() == "v0002" and not partial.exists()


def _group(n: int = 6) -> pd.DataFrame:
    batch = np.array([1, 2, 4, 8, 16, 32][:n], dtype=float)
    return pd.DataFrame({
        "model_path": "m", "system": "h100_sxm", "isl": 1024, "osl": 128, "batch_size": batch,
        "tp_size": 1.0, "pp_size": 1.0, "attention_dp_size": 1.0,
        "silicon_ttft_ms": 100 * batch ** 0.5, "silicon_tpot_ms": 10 + batch,
    })


def test_picking_with_the_truth_meets_every_slo_without_regret():
    frame = _group()
    truth = {"ttft": frame["silicon_ttft_ms"].to_numpy(), "tpot": frame["silicon_tpot_ms"].to_numpy()}
    result = picking_evaluation(frame, truth, truth)
    assert result["groups"] == 1 and result["met_slo_pct"] == 100.0
    assert result["median_regret_pct"] == 0.0 and result["wrong_picks"] == 0


def test_optimistic_predictions_pick_wrong_and_a_bound_makes_them_safe():
    frame = _group()
    truth = {"ttft": frame["silicon_ttft_ms"].to_numpy(), "tpot": frame["silicon_tpot_ms"].to_numpy()}
    optimistic = {k: v * 0.6 for k, v in truth.items()}
    wrong = picking_evaluation(frame, optimistic, optimistic)
    assert wrong["wrong_picks"] == 1 and wrong["met_slo_pct"] == 0.0
    assert wrong["median_regret_pct"] == 100.0
    bound = {k: v * 1.0 for k, v in truth.items()}  # an upper bound that covers the truth
    safe = picking_evaluation(frame, optimistic, bound)
    assert safe["met_slo_pct"] == 100.0
    too_wide = {k: v * 100 for k, v in truth.items()}  # nothing looks safe: the chooser falls
    fallback = picking_evaluation(frame, truth, too_wide)  # back to the closest (batch 1)
    assert fallback["fallback_picks"] == 1 and fallback["met_slo_pct"] == 100.0
    assert fallback["median_regret_pct"] > 50
