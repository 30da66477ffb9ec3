"""Bench rows against the active prediction, and stored rows back into training data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tune.bench import BenchConfig, LevelResult, RequestRecord, bench_rows, compare_with_prediction
from tune.errors import DataError
from tune.predict.perfdata import measured_frame
from tune.predict.predictor import Predictor


def _rows(ttft_ms: float, model_path: str = "meta-llama/Llama-3.1-8B-Instruct") -> list[dict]:
    config = BenchConfig(base_url="http://x/v1", model="m", isl=1024, osl=128, concurrency=(8,),
                         requests=2, system="h100_sxm", model_path=model_path)
    records = [RequestRecord(ttft_ms=ttft_ms, e2e_ms=ttft_ms + 127 * 8.0, itl_ms=[8.0] * 127,
                             output_tokens=128) for _ in range(2)]
    return bench_rows(config, [LevelResult(8, records, duration_s=1.0)])


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    from tune.predict.predictor import ARTIFACT_DIR

    return Predictor.load(ARTIFACT_DIR)


def test_a_measurement_far_outside_the_interval_is_reported(predictor: Predictor):
    rows = _rows(ttft_ms=1e6)
    (note,) = compare_with_prediction(rows, predictor)
    assert "TTFT" in note and "outside" in note
    row = rows[0]
    assert row["outside_interval"] and row["pred_version"] == "shipped"
    assert row["pred_ttft_ms_p10"] <= row["pred_ttft_ms"] <= row["pred_ttft_ms_p90"]
    assert row["pred_case"] == "seen"


def test_a_measurement_inside_the_interval_is_quiet(predictor: Predictor):
    probe = _rows(ttft_ms=1.0)
    compare_with_prediction(probe, predictor)
    inside = _rows(ttft_ms=probe[0]["pred_ttft_ms"])
    inside[0]["silicon_tpot_ms"] = probe[0]["pred_tpot_ms"]
    assert compare_with_prediction(inside, predictor) == []
    assert inside[0]["outside_interval"] is False


def test_rows_the_catalogs_cannot_price_are_left_alone(predictor: Predictor):
    rows = _rows(ttft_ms=100.0, model_path="foundry-tiny")
    assert compare_with_prediction(rows, predictor) == []
    assert "pred_ttft_ms" not in rows[0]


def test_stored_rows_become_training_rows_since_a_time():
    old, new = _rows(100.0)[0], _rows(120.0)[0]
    old["measured_utc"] = (datetime.now(UTC) - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    since = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    frame = measured_frame([old, new], source="store", since=since)
    assert len(frame) == 1 and frame.loc[0, "silicon_ttft_ms"] == 120.0
    assert list(frame["source"]) == ["store"]
    assert len(measured_frame([old, new], source="store")) == 2
    with pytest.raises(DataError, match="ISO 8601"):
        measured_frame([old], source="store", since="last tuesday")
