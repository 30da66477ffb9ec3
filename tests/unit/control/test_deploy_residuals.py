"""A deployment's benchmark compared with its prediction: a measurement outside the predicted
interval is a residual, stored as the next training row and named on the deployment."""

from __future__ import annotations

import pytest

import tune
from control.deploy_actions import compare_with_prediction
from tune.bench import BenchConfig, LevelResult, RequestRecord

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
CHOICE = {"gpu": "h100_sxm", "tp": 1, "pp": 1, "replicas": 1, "precision": "bf16"}


def _rows(ttft_ms: float, tpot_ms: float, *, osl: int = 64) -> list[dict]:
    config = BenchConfig(base_url="http://gateway/v1", model="dep", isl=128, osl=osl, concurrency=(4,),
                         requests=4, model_path=MODEL)  # fmt: skip
    e2e = ttft_ms + tpot_ms * (osl - 1)
    records = [RequestRecord(ttft_ms=ttft_ms, e2e_ms=e2e, output_tokens=osl) for _ in range(4)]
    return tune.bench_rows(config, [LevelResult(concurrency=4, records=records, duration_s=e2e / 1000)])


def _predicted() -> tuple[float, float]:
    rows = _rows(1.0, 1.0)
    compare_with_prediction(rows, CHOICE)
    return rows[0]["pred_ttft_ms"], rows[0]["pred_tpot_ms"]


def test_a_measurement_far_outside_the_interval_is_named_and_marked_for_training():
    ttft, tpot = _predicted()
    rows = _rows(ttft * 20, tpot)
    notes = compare_with_prediction(rows, CHOICE)
    assert len(notes) == 1 and "TTFT" in notes[0] and "outside" in notes[0]
    row = rows[0]
    assert row["outside_interval"] is True
    assert (row["system"], row["tp_size"], row["pp_size"], row["precision"]) == ("h100_sxm", 1, 1, "bf16")
    assert row["pred_ttft_ms_p10"] < row["pred_ttft_ms_p90"] < row["silicon_ttft_ms"]


def test_a_measurement_as_predicted_is_not_a_residual():
    ttft, tpot = _predicted()
    rows = _rows(ttft, tpot)
    assert compare_with_prediction(rows, CHOICE) == []
    assert rows[0]["outside_interval"] is False
    assert rows[0]["pred_ttft_ms_p10"] <= rows[0]["silicon_ttft_ms"] <= rows[0]["pred_ttft_ms_p90"]


@pytest.mark.parametrize("choice", [{}, {"engine": "cpu", "replicas": 1, "max_num_seqs": 8}])
def test_a_cpu_deployment_has_no_prediction_to_compare_with(choice):
    rows = _rows(100.0, 10.0)
    assert compare_with_prediction(rows, choice) == []
    assert "pred_ttft_ms" not in rows[0] and rows[0]["system"] == "cpu"
