"""Client CPU per request of an outside provider against the bare HTTP client, side by side in one run.

An OpenAI-compatible fake upstream (``python -m tests.fakes.upstreams openai --latency-ms 5``)
runs in its own process; this process calls it at concurrency 16, closed loop, and counts its
own CPU time (``time.process_time``) per request:

    stream:  the upstream streams 8 chunks, as every text request does
    json:    one JSON answer (an embeddings call)

two ways: ``provider`` (``OpenAICompatibleProvider``: serve/providers/_http.py's aiohttp session,
SSE parsing, deltas, error translation) and ``aiohttp`` (the floor: a bare ``aiohttp`` session
posting the same body and reading the bytes, nothing parsed). Rounds alternate the two so that
drift on a shared machine hits them alike; the figures are medians over rounds, ratios against
the floor. (Until 2026-11-30 the providers' client was httpx over an aiohttp transport; that
layer cost ~170 us per call more.)
"""

from __future__ import annotations

import asyncio
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson

from benchmarks._meta import write
from serve.config import OpenAIProvider
from serve.providers.openai_compat import OpenAICompatibleProvider
from serve.runtimes.engine import ChatMessage, GenerateRequest, SamplingParams

CONCURRENCY = 16
REQUESTS = 800  # per client, mode and round
ROUNDS = 3
LATENCY_MS = 5
MAX_CONNECTIONS = 64
BASELINE = "aiohttp"


async def _run(base_url: str, client: str, mode: str, requests: int) -> dict:
    cfg = OpenAIProvider(type="openai", base_url=base_url, model="gpt-x", max_connections=MAX_CONNECTIONS)
    provider = OpenAICompatibleProvider.from_config("bench", "p", cfg, "sk-bench")
    request = GenerateRequest("bench", messages=(ChatMessage("user", "Name some words."),), params=SamplingParams(max_tokens=8))
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS))
    headers = {"authorization": "Bearer sk-bench", "content-type": "application/json"}
    stream_body = orjson.dumps({"model": "gpt-x", "messages": [{"role": "user", "content": "Name some words."}],
                                "stream": True, "max_tokens": 8})  # fmt: skip
    embed_body = orjson.dumps({"model": "gpt-x", "input": ["some words"], "encoding_format": "float"})

    async def one() -> None:
        if client == "aiohttp":
            url, body = (f"{base_url}/chat/completions", stream_body) if mode == "stream" else (f"{base_url}/embeddings", embed_body)
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
        elif mode == "stream":
            async for _ in provider.generate(request):
                pass
        else:
            await provider.embed(["some words"])
    async def worker(count: int) -> None:
        for _ in range(count):
            await one()

    try:
        await asyncio.gather(*(worker(4) for _ in range(CONCURRENCY)))  # warm the pool
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker(requests // CONCURRENCY) for _ in range(CONCURRENCY)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await provider.close()
        await session.close()
    done = requests // CONCURRENCY * CONCURRENCY
    return {"cpu_ms_per_request": cpu * 1000 / done, "requests_per_s": done / wall}


def _start_upstream() -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.upstreams", "openai", "--port", "0", "--latency-ms", str(LATENCY_MS)],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline() if process.stdout else ""
    match = re.search(r"(http://\S+)", line)
    if not match:
        process.terminate()
        raise RuntimeError(f"the fake upstream did not start: {line!r}")
    return process, match.group(1)


def main(out_dir: Path = Path("benchmarks/results"), requests: int = REQUESTS, rounds: int = ROUNDS) -> dict:
    transports = ["provider", "aiohttp"]
    modes = ["stream", "json"]
    process, base_url = _start_upstream()
    samples: dict[str, dict[str, list[dict]]] = {m: {t: [] for t in transports} for m in modes}
    try:
        for _ in range(rounds):
            for mode in modes:
                for transport in transports:
                    samples[mode][transport].append(asyncio.run(_run(base_url, transport, mode, requests)))
    finally:
        process.terminate()
        process.wait(timeout=10)
    results = {
        mode: {
            t: {key: round(statistics.median(s[key] for s in runs), 3) for key in ("cpu_ms_per_request", "requests_per_s")}
            for t, runs in by_transport.items()
        }
        for mode, by_transport in samples.items()
    }
    summary = {
        f"{mode}_cpu_ratio_{t}_vs_{BASELINE}": round(
            results[mode][t]["cpu_ms_per_request"] / results[mode][BASELINE]["cpu_ms_per_request"], 3
        )
        for mode in modes
        for t in transports
        if t != BASELINE
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    parameters = {"concurrency": CONCURRENCY, "requests": requests, "rounds": rounds, "upstream_latency_ms": LATENCY_MS}
    return write(out_dir, "providers", parameters, results, summary)


if __name__ == "__main__":
    import json

    doc = main()
    print(json.dumps({"results": doc["results"], "summary": doc["summary"]}, indent=2))
