"""The measure-the-truth loop on the CPU stack: bench -> metrics store -> `foundry tune train
--from-store` -> a new predictor version predicts (CLI and control API)."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

import httpx
from e2e_support import ADMIN_KEY


def _predict_csv(stack, src, dst) -> list[dict[str, str]]:
    stack.cli("predict", "--csv", str(src), "--out", str(dst))
    return list(csv.DictReader(io.StringIO(dst.read_text())))


def test_bench_rows_retrain_a_new_version_that_predicts_them(stack, tmp_path):
    model_dir = stack.home / "models" / "foundry-tiny"  # the CPU runtime's model (config.json)
    assert (model_dir / "config.json").is_file()
    since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    bench_csv = tmp_path / "bench.csv"
    result = stack.cli(
        "bench", "--base-url", stack.base_url, "--model", "foundry-tiny", "--model-path", str(model_dir),
        "--system", "cpu", "--isl", "16", "--osl", "8", "--concurrency", "1,2,4", "--requests", "4",
        "--api-key", ADMIN_KEY, "--out", str(bench_csv), "--json",
    )  # fmt: skip
    rows = json.loads(result.stdout)
    assert len(rows) == 3 and "rows stored in the metrics store" in result.stderr
    # the shipped predictor never saw this model nor this system: it says so, with a wide interval
    assert {r["pred_case"] for r in rows} == {"unseen_model_gpu"}
    assert {r["pred_version"] for r in rows} == {"shipped"}
    before = _predict_csv(stack, bench_csv, tmp_path / "before.csv")

    train = stack.cli("tune", "train", "--from-store", "--since", since)
    assert "3 rows from the metrics store" in train.stderr
    assert "version v0001" in train.stderr and "After" in train.stdout
    status = json.loads(stack.cli("tune", "status", "--json").stdout)
    assert status["active"] == "v0001" and status["training_sources"] == ["store"]
    assert status["systems"] == ["cpu"] and status["training_rows"] == 3

    after = _predict_csv(stack, bench_csv, tmp_path / "after.csv")
    assert {r["pred_case"] for r in after} == {"seen"}

    def error(predicted: list[dict[str, str]], column: str) -> float:
        return sum(abs(float(p[f"pred_{column}_ms"]) / float(p[f"silicon_{column}_ms"]) - 1) for p in predicted) / 3

    # trained on three rows measured on a shared CPU: closer than before, within a factor of two
    for column in ("ttft", "tpot"):
        assert error(after, column) < min(1.0, error(before, column)), column

    api = httpx.post(
        f"{stack.api_url}/predict", json={"rows": [{k: rows[0][k] for k in ("model_path", "system", "isl", "osl", "batch_size", "tp_size", "backend")}]},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=60,
    )  # fmt: skip
    assert api.status_code == 200, api.text
    body = api.json()
    assert body["version"] == "v0001" and body["data"][0]["pred_case"] == "seen"
    assert abs(body["data"][0]["pred_tpot_ms"] / float(after[0]["pred_tpot_ms"]) - 1) < 1e-6
