"""`foundry bench` against a small real OpenAI-compatible streaming server with known timing.

The server (starlette on uvicorn, in a thread, on a free port) streams ``max_tokens`` tokens:
the first after ``FIRST_TOKEN_S``, the rest ``TOKEN_S`` apart, and a final usage chunk. The
benchmark must recover those figures, write measured-data rows, and the trainer must take them.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pandas as pd
import pytest
import typer
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from typer.testing import CliRunner

from tune.cli import register
from tune.predict.schema import MEASURED_COLUMNS

FIRST_TOKEN_S = 0.030
TOKEN_S = 0.005
API_KEY = "sk-test"


def _fake_openai_app() -> Starlette:
    async def stream(body: dict, chat: bool) -> AsyncIterator[bytes]:
        n = int(body.get("max_tokens") or 16)
        prompt = body["messages"][0]["content"] if chat else body["prompt"]
        await asyncio.sleep(FIRST_TOKEN_S)
        if chat:  # like vLLM: a role-only chunk first, which carries no text
            yield b'data: {"choices": [{"index": 0, "delta": {"role": "assistant"}}]}\n\n'
        for i in range(n):
            if i:
                await asyncio.sleep(TOKEN_S)
            choice = {"index": 0, "delta": {"content": f" t{i}"}} if chat else {"index": 0, "text": f" t{i}"}
            yield f"data: {json.dumps({'choices': [choice]})}\n\n".encode()
        usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": n,
                 "total_tokens": len(prompt.split()) + n}
        yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode()
        yield b"data: [DONE]\n\n"

    def handler(chat: bool):  # noqa: ANN202
        async def endpoint(request: Request) -> Response:
            if request.headers.get("authorization") != f"Bearer {API_KEY}":
                return JSONResponse({"error": {"message": "bad key", "type": "invalid_request_error",
                                               "param": None, "code": "invalid_api_key"}}, 401)
            body = await request.json()
            assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
            return StreamingResponse(stream(body, chat), media_type="text/event-stream")
        return endpoint

    return Starlette(routes=[
        Route("/v1/chat/completions", handler(True), methods=["POST"]),
        Route("/v1/completions", handler(False), methods=["POST"]),
    ])


@pytest.fixture(scope="module")
def fake_server() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(_fake_openai_app(), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "fake server did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture()
def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_bench_measures_the_servers_timing_and_writes_measured_rows(
    cli: typer.Typer, fake_server: str, tmp_path: Path
):
    out = tmp_path / "bench.csv"
    result = CliRunner().invoke(cli, [
        "bench", "--base-url", fake_server, "--model", "fake", "--isl", "64", "--osl", "16",
        "--concurrency", "1,4", "--requests", "8", "--api-key", API_KEY, "--out", str(out),
        "--system", "h100_sxm", "--model-path", "Qwen/Qwen3-8B", "--json", "--no-record",
    ])
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(out)
    assert list(rows.columns[: len(MEASURED_COLUMNS)]) == MEASURED_COLUMNS
    assert rows["batch_size"].tolist() == [1, 4] and (rows["requests_ok"] == 8).all()
    assert (rows["backend"] == "foundry").all() and (rows["system"] == "h100_sxm").all()
    for _, row in rows.iterrows():
        assert FIRST_TOKEN_S * 1e3 <= row["silicon_ttft_ms"] < FIRST_TOKEN_S * 1e3 + 1000
        assert TOKEN_S * 1e3 * 0.9 <= row["silicon_tpot_ms"] < TOKEN_S * 1e3 + 100
        assert row["ttft_p50_ms"] <= row["ttft_p99_ms"] and row["e2e_p50_ms"] <= row["e2e_p99_ms"]
        assert row["output_tokens_mean"] == 16 and row["prompt_tokens_mean"] == 64
    # concurrency 4 overlaps requests: about 4x the throughput of concurrency 1
    assert rows.loc[1, "output_tps"] > 2.0 * rows.loc[0, "output_tps"]
    printed = json.loads(result.stdout)
    assert [r["batch_size"] for r in printed] == [1, 4]

    # the rows retrain the predictor
    artifacts = tmp_path / "artifacts"
    result = CliRunner().invoke(cli, ["tune", "train", "--data", str(tmp_path), "--out",
                                      str(artifacts), "--no-cv"])
    assert result.exit_code == 0, result.output
    meta = json.loads((artifacts / "metadata.json").read_text())
    assert meta["training_rows"] == 2 and meta["training_sources"] == ["bench.csv"]


def test_bench_completions_endpoint(cli: typer.Typer, fake_server: str):
    result = CliRunner().invoke(cli, [
        "bench", "--base-url", fake_server, "--model", "fake", "--isl", "16", "--osl", "4",
        "--concurrency", "2", "--requests", "2", "--api-key", API_KEY, "--endpoint",
        "completions", "--json", "--no-record",
    ])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["requests_ok"] == 2 and row["system"] == "cpu" and row["endpoint"] == "completions"


def test_bench_reports_a_rejected_key(cli: typer.Typer, fake_server: str):
    result = CliRunner().invoke(cli, [
        "bench", "--base-url", fake_server, "--model", "fake", "--isl", "8", "--osl", "2",
        "--requests", "1", "--api-key", "wrong",
    ])
    assert result.exit_code == 1 and "HTTP 401" in result.output


def test_measured_search_benchmarks_each_candidate(fake_server: str):
    from tune.bench import BenchConfig, MeasuringEvaluator
    from tune.search.optimize import optimize
    from tune.search.space import SearchSpace

    space = SearchSpace(
        model="Qwen/Qwen3-8B", gpus=("h100_sxm",), num_gpus=2, isl=32, osl=8, concurrency=4,
        slo_ttft_ms=1000, slo_tpot_ms=50, tp=(1,), pp=(1,), max_num_seqs=(2, 4),
        precisions=("native",), max_num_batched_tokens=(8192,),
    )
    template = BenchConfig(base_url=fake_server, model="fake", isl=32, osl=8, concurrency=(1,),
                           requests=4, api_key=API_KEY)
    result = optimize(space, search="grid", evaluate=MeasuringEvaluator(space, template))
    assert result.evaluated == 4 and result.best.meets_slo
    # measured, not predicted: the fake server's timing
    assert FIRST_TOKEN_S * 1e3 <= result.best.ttft_ms < FIRST_TOKEN_S * 1e3 + 1000
    assert TOKEN_S * 1e3 * 0.9 <= result.best.tpot_ms < TOKEN_S * 1e3 + 100
