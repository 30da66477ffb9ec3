"""Training and cross-validation on the public measurements (skipped when they are absent)."""

from __future__ import annotations

import json

import pytest

from tune.predict.perfdata import data_hash, default_data_dir, load_measured
from tune.predict.predictor import ARTIFACT_DIR
from tune.predict.training import cross_validate, usable_rows

DATA = default_data_dir()
pytestmark = pytest.mark.skipif(
    not (DATA / "measured_serving.csv").is_file(),
    reason=f"no measured data at {DATA} (set FOUNDRY_PERFDATA)",
)


@pytest.fixture(scope="module")
def measured():
    frame, skipped = usable_rows(load_measured(DATA))
    assert not skipped  # the catalogs know every model and GPU of the public data
    return frame


def test_random_split_accuracy_holds(measured):
    report = cross_validate(measured, schemes=("random",))
    ttft, tpot = report.results["random"]["ttft"], report.results["random"]["tpot"]
    assert ttft["mape"] <= 22.0 and tpot["mape"] <= 10.0
    assert abs(ttft["signed_mean_error"]) < 10 and abs(tpot["signed_mean_error"]) < 5


def test_shipped_artifacts_were_trained_on_this_data_and_carry_their_cv(measured):
    meta = json.loads((ARTIFACT_DIR / "metadata.json").read_text())
    assert meta["training_data_sha256"] == data_hash(measured)
    cv = meta["cross_validation"]["results"]
    assert set(cv) == {"random", "leave_one_model_out", "leave_one_gpu_out"}
    assert cv["random"]["tpot"]["mape"] < 10.0
    # unseen cases are predicted on the safe side, and the p90 bounds cover about 90%
    for scheme in ("leave_one_model_out", "leave_one_gpu_out"):
        for target in ("ttft", "tpot"):
            assert cv[scheme][target]["signed_mean_error"] >= 0.0
            assert 80 <= cv[scheme][target]["p90_coverage"] <= 97
    assert set(meta["intervals"]["quantiles"]) == {"seen", "unseen_model", "unseen_gpu", "unseen_model_gpu"}
