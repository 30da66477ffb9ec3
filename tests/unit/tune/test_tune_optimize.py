"""Evaluation with the predictor, constraints, conversion to vLLM/Ray Serve, the CLI contracts."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from tune.cli import register
from tune.search.deploy import deployment_spec, placement_group_bundles
from tune.errors import InvalidInput
from tune.search.optimize import choose_candidate, optimize
from tune.predict.predictor import Predictor
from tune.search.space import Evaluator, SearchSpace

LLAMA_70B = "meta-llama/Llama-3.1-70B-Instruct"


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.load()


@pytest.fixture()
def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def _space(**overrides: object) -> SearchSpace:
    base = dict(model=LLAMA_70B, gpus=("h100_sxm", "a100_sxm_80gb"), num_gpus=8, isl=2048,
                osl=256, concurrency=64, slo_ttft_ms=3000, slo_tpot_ms=60)
    return SearchSpace(**(base | overrides))


def test_constraints_are_enforced(predictor: Predictor):
    space = _space(tp=(1, 3, 4, 8), pp=(1,), precisions=("native", "fp8"), max_num_seqs=(32, 512),
                   max_num_batched_tokens=(8192,))
    ev = Evaluator(space, predictor)
    by = {(c.gpu, c.tp, c.precision, c.replicas, c.max_num_seqs): e
          for e in ev([space.decode(g) for g in space.grid()]) for c in [e.candidate]}
    assert "not divisible" in by[("h100_sxm", 3, "native", 1, 32)].reason  # 64 heads
    assert "weights do not fit" in by[("h100_sxm", 1, "native", 1, 32)].reason  # 141 GB bf16
    assert "GPU budget" in by[("h100_sxm", 8, "native", 2, 32)].reason  # 16 > 8 GPUs
    assert "fp8 not available" in by[("a100_sxm_80gb", 4, "fp8", 1, 32)].reason
    assert "KV cache holds" in by[("h100_sxm", 4, "native", 2, 512)].reason
    ok = by[("h100_sxm", 4, "native", 2, 32)]
    assert ok.feasible and ok.gpus_used == 8 and ok.batch_per_replica == 32


def test_waiting_for_a_slot_adds_to_ttft(predictor: Predictor):
    space = _space(gpus=("h100_sxm",), tp=(4,), pp=(1,), max_num_seqs=(16, 64),
                   precisions=("native",), max_num_batched_tokens=(8192,), max_replicas=1)
    capped, free = Evaluator(space, predictor)([space.decode((0, 0, 0, 0, i, 0, 0)) for i in (0, 1)])
    assert capped.batch_per_replica == 16 and free.batch_per_replica == 64
    assert capped.ttft_ms > 2 * capped.e2e_ms / 3  # 48 of 64 users wait a whole request


def test_optimize_finds_an_slo_meeting_config_and_converts_it(predictor: Predictor):
    result = optimize(_space(), search="grid", predictor=predictor)
    best = result.best
    assert best.meets_slo and best.ttft_ms <= 3000 and best.tpot_ms <= 60
    assert best.output_tps_per_gpu == max(e.output_tps_per_gpu for e in result.front)
    spec = deployment_spec(LLAMA_70B, best, isl=2048, osl=256)
    c = best.candidate
    assert spec["vllm"]["tensor_parallel_size"] == c.tp
    assert spec["vllm"]["pipeline_parallel_size"] == c.pp
    assert spec["vllm"]["max_num_seqs"] == c.max_num_seqs
    assert spec["vllm"]["max_model_len"] >= 2048 + 256
    assert spec["vllm"]["quantization"] in (None, "fp8")
    assert spec["ray_serve"]["num_replicas"] == c.replicas
    assert spec["ray_serve"]["placement_group_bundles"] == [{"CPU": 1, "GPU": 1}] * (c.tp * c.pp)


def test_placement_bundles_and_strategy():
    assert placement_group_bundles(4, 1, accelerator_type="H100") == [
        {"CPU": 1, "GPU": 1, "accelerator_type:H100": 0.001}] * 4


def test_choose_candidate_prefers_throughput_among_slo_meeting_rows(predictor: Predictor):
    rows = pd.DataFrame([
        {"id": i, "model_path": "meta-llama/Llama-3.1-8B-Instruct", "system": "h100_sxm",
         "isl": 1024, "osl": 256, "batch_size": b, "tp_size": 1}
        for i, b in enumerate((1, 8, 64, 512))
    ])
    pred = predictor.predict(rows)
    slo_tpot = float(pred.loc[2, "pred_tpot_ms"]) * 1.01  # rows 0..2 meet it, 3 does not
    # risk 0.5 judges the SLOs on the point prediction
    chosen = choose_candidate(rows, slo_ttft_ms=1e6, slo_tpot_ms=slo_tpot, predictor=predictor,
                              risk=0.5)
    meeting = pred[pred["pred_tpot_ms"] <= slo_tpot]
    assert chosen["id"] == int(meeting.loc[meeting["pred_output_tps_per_gpu"].idxmax(), "id"])
    assert chosen["meets_slo"]
    # the default risk (0.1) judges them on the 90th percentile: row 2 is no longer safe
    safe = choose_candidate(rows, slo_ttft_ms=1e6, slo_tpot_ms=slo_tpot, predictor=predictor)
    assert safe["pred_tpot_ms_bound"] > safe["pred_tpot_ms"]
    assert safe["pred_tpot_ms_bound"] <= slo_tpot and safe["id"] != 2
    none = choose_candidate(rows, slo_ttft_ms=1e6, slo_tpot_ms=0.001, predictor=predictor)
    assert not none["meets_slo"] and none["id"] == int(pred["pred_tpot_ms"].idxmin())
    with pytest.raises(InvalidInput, match="id"):
        choose_candidate(rows.drop(columns="id"), slo_ttft_ms=1, slo_tpot_ms=1, predictor=predictor)


def test_cli_optimize_candidates_json(cli: typer.Typer, tmp_path: Path):
    path = tmp_path / "candidates.csv"
    pd.DataFrame([
        {"id": name, "model_path": "Qwen/Qwen3-32B", "system": gpu, "isl": 1024, "osl": 512,
         "batch_size": 16, "tp_size": tp}
        for name, gpu, tp in (("small", "l4", 8), ("mid", "h100_sxm", 2), ("big", "b200_sxm", 1))
    ]).to_csv(path, index=False)
    result = CliRunner().invoke(cli, ["optimize", "--candidates", str(path), "--slo-ttft-ms",
                                      "2000", "--slo-tpot-ms", "50", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["id"] in {"small", "mid", "big"}
    for key in ("pred_ttft_ms", "pred_tpot_ms", "pred_e2e_ms", "pred_output_tps_per_gpu"):
        assert out[key] > 0


def test_cli_optimize_model_json(cli: typer.Typer):
    result = CliRunner().invoke(cli, [
        "optimize", "--model", "Qwen/Qwen3-8B", "--gpu", "h100_sxm,l40s", "--num-gpus", "4",
        "--isl", "1024", "--osl", "256", "--concurrency", "32", "--slo-ttft-ms", "1000",
        "--slo-tpot-ms", "40", "--search", "grid", "--objective", "cost", "--json",
    ])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    best = out["best"]
    for key in ("gpu", "tp", "pp", "replicas", "max_num_seqs", "precision", "pred_ttft_ms",
                "pred_tpot_ms", "pred_output_tps_per_gpu", "cost_per_million_tokens_usd"):
        assert key in best
    assert best["meets_slo"] and out["pareto_front"]
    assert best["cost_per_million_tokens_usd"] == min(
        e["cost_per_million_tokens_usd"] for e in out["pareto_front"])
    assert best["ray_serve"]["placement_group_bundles"]


def test_cli_optimize_errors_are_clear(cli: typer.Typer):
    result = CliRunner().invoke(cli, ["optimize", "--model", "Qwen/Qwen3-8B", "--slo-ttft-ms",
                                      "1", "--slo-tpot-ms", "1"])
    assert result.exit_code == 1 and "missing --gpu" in result.output
    result = CliRunner().invoke(cli, [
        "optimize", "--model", "Qwen/Qwen3-8B", "--gpu", "h100_sxm,tpu", "--num-gpus", "4",
        "--isl", "1", "--osl", "1", "--concurrency", "1", "--slo-ttft-ms", "1", "--slo-tpot-ms", "1"])
    assert result.exit_code == 1 and "tpu" in result.output
