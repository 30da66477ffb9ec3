"""`foundry tune train` and `foundry tune cv` end to end on a generated data directory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import typer
from typer.testing import CliRunner

from tune.cli import register
from tune.predict.predictor import Predictor
from tune.predict.roofline import roofline
from tune.predict.workload import resolve


def _write_measurements(directory: Path, n: int = 160) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "id": [f"r{i}" for i in range(n)], "backend": "vllm",
        "model_path": rng.choice(["Qwen/Qwen3-8B", "openai/gpt-oss-20b"], n),
        "system": rng.choice(["h100_sxm", "l40s"], n), "isl": rng.choice([256, 2048], n),
        "osl": 256, "batch_size": rng.choice([1, 8, 32], n), "tp_size": rng.choice([1, 2], n),
    })
    r = roofline(resolve(frame)[1])
    frame["silicon_ttft_ms"] = 20 + 1.5 * r.ttft_queued_ms
    frame["silicon_tpot_ms"] = 2 + 1.4 * r.tpot_ms
    frame.to_csv(directory / "measured.csv", index=False)
    frame.loc[:9].assign(system="tpu_v9").to_csv(directory / "bench_tpu.csv", index=False)


def test_tune_cv_and_train_from_a_directory(tmp_path: Path):
    _write_measurements(tmp_path)
    app = typer.Typer()
    register(app)
    cv = CliRunner().invoke(app, ["tune", "cv", "--data", str(tmp_path), "--json"])
    assert cv.exit_code == 0, cv.output
    report = json.loads(cv.stdout)
    assert report["rows"] == 160  # the 10 rows of an unknown system are skipped, with a note
    assert "skipped" in cv.output and "system='tpu_v9'" in cv.output
    assert report["results"]["random"]["tpot"]["mape"] < 10

    out = tmp_path / "artifacts"
    train = CliRunner().invoke(app, ["tune", "train", "--data", str(tmp_path), "--out", str(out)])
    assert train.exit_code == 0, train.output
    assert "leave_one_gpu_out" in train.output
    predictor = Predictor.load(out)
    assert predictor.metadata["cross_validation"]["rows"] == 160
    assert sorted(predictor.metadata["systems"]) == ["h100_sxm", "l40s"]


def test_tune_train_versions_artifacts_under_foundry_home(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("FOUNDRY_HOME", str(tmp_path / "home"))
    data = tmp_path / "data"
    data.mkdir()
    _write_measurements(data)
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    first = runner.invoke(app, ["tune", "train", "--data", str(data)])
    assert first.exit_code == 0, first.output
    assert "version v0001" in first.output and "Before: shipped" in first.output
    status = json.loads(runner.invoke(app, ["tune", "status", "--json"]).stdout)
    assert status["active"] == "v0001" and status["training_rows"] == 160
    assert status["training_sources"] == ["measured.csv"] and status["intervals"]
    second = runner.invoke(app, ["tune", "train", "--data", str(data / "measured.csv"), "--no-activate"])
    assert second.exit_code == 0, second.output
    status = json.loads(runner.invoke(app, ["tune", "status", "--json"]).stdout)
    assert status["active"] == "v0001" and status["versions"] == ["v0001", "v0002"]
    assert runner.invoke(app, ["tune", "activate", "v0002"]).exit_code == 0
    assert Predictor.load().metadata["version"] == "v0002"
    bad = runner.invoke(app, ["tune", "activate", "v0042"])
    assert bad.exit_code == 1 and "v0042" in bad.output
