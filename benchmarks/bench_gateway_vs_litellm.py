"""Gateway speed against LiteLLM proxy, side by side, in one run.

One OpenAI-compatible upstream (tests/fakes/upstreams.py) answers every request after 5 ms.
Three ways to reach it, each driven closed-loop at concurrency 16 and 128, streamed and not
(the three back to back for each mode, so that they share the machine's state):

    direct    client → upstream
    foundry   client → Serve's HAProxy ingress → Foundry gateway replica → upstream
    litellm   client → LiteLLM proxy (one worker) → upstream
    floor     client → Serve's HAProxy ingress → a logic-free proxy replica → upstream
              (opt-in: benchmarks/serve_floor.py; what Serve itself costs)

Both gateways authenticate a key (LiteLLM's master key, a Foundry admin key) and route to the
same upstream; Foundry also records every request in its metrics store. LiteLLM is installed
into its own virtualenv (benchmarks/.venv-litellm) the first time this runs.

Reported: requests/s, p50/p95/p99 latency, errors; per mode the ratios foundry/direct (req/s)
and foundry/litellm (req/s, p50), each gateway's p50 overhead over direct, and Foundry's req/s at
concurrency 128 over its own at 16 (more clients must not mean less work done).

    FOUNDRY_BENCH_DURATION_S=12           measured seconds per target and mode (after 2 s warm-up)
    FOUNDRY_BENCH_TARGETS=direct,foundry  a subset (default direct,foundry,litellm; LiteLLM is the slow
                                          one to set up); add floor (needs foundry) for Serve's floor
    FOUNDRY_BENCH_CLIENT=httpx            the load generator of the first runs (default aiohttp; see load_aiohttp)
    FOUNDRY_BENCH_GATEWAY_REPLICAS=2      gateway replicas (default 1, the config's default)
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx
import orjson

from benchmarks._meta import write

HERE = Path(__file__).resolve().parent
LITELLM_VENV = HERE / ".venv-litellm"
LITELLM_SPEC = "litellm[proxy]==1.108.7"
CONCURRENCIES = (16, 128)
DURATION_S = float(os.environ.get("FOUNDRY_BENCH_DURATION_S", "12"))
WARMUP_S = 2.0
CLIENT = os.environ.get("FOUNDRY_BENCH_CLIENT", "aiohttp")
GATEWAY_REPLICAS = int(os.environ.get("FOUNDRY_BENCH_GATEWAY_REPLICAS", "1"))
KEY = "sk-fnd-bench-0123456789abcdefghijklmnopqrstuvwxyzABCD"
BODY = {"model": "bench", "messages": [{"role": "user", "content": "Say something short."}], "max_tokens": 16}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout_s: float, ok=(200,), headers=None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2, headers=headers).status_code in ok:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not come up within {timeout_s:.0f} s")


def ensure_litellm() -> Path:
    exe = LITELLM_VENV / "bin" / "litellm"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", LITELLM_SPEC], check=True)
    return exe


async def load(url: str, headers: dict, stream: bool, concurrency: int) -> dict:
    """Closed loop: ``concurrency`` clients, each sending its next request when the last one is
    read to the end, with the client ``FOUNDRY_BENCH_CLIENT`` names."""
    if CLIENT == "httpx":
        return await load_httpx(url, headers, stream, concurrency)
    return await load_aiohttp(url, headers, stream, concurrency)


async def load_aiohttp(url: str, headers: dict, stream: bool, concurrency: int) -> dict:
    """aiohttp's CPU per request stays ~0.3 ms at any concurrency on the 2-core box, where
    httpx's grew from 3 ms at 16 connections to 15-20 ms at 128 (its pool's bookkeeping): as the
    load generator it was the bottleneck of "direct" and starved the servers under test of CPU."""
    body = orjson.dumps({**BODY, "stream": stream})
    headers = {**headers, "content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def one() -> bool:
            try:
                async with session.post(url, data=body, headers=headers) as r:
                    async for _ in r.content.iter_any():
                        pass
                    return r.status == 200
            except (aiohttp.ClientError, TimeoutError):
                return False

        return await _closed_loop(one, concurrency)


async def load_httpx(url: str, headers: dict, stream: bool, concurrency: int) -> dict:
    """The load generator of the first measurements (issue 12's figures), for comparison."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    body = {**BODY, "stream": stream}
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def one() -> bool:
            try:
                if stream:
                    async with client.stream("POST", url, json=body, headers=headers) as r:
                        async for _ in r.aiter_raw():
                            pass
                        return r.status_code == 200
                return (await client.post(url, json=body, headers=headers)).status_code == 200
            except httpx.HTTPError:
                return False

        return await _closed_loop(one, concurrency)


async def _closed_loop(one: Callable[[], Awaitable[bool]], concurrency: int) -> dict:
    """``concurrency`` workers calling ``one`` back to back for ``WARMUP_S + DURATION_S``; the
    requests started after the warm-up are measured."""
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + WARMUP_S + DURATION_S
    measure_from = time.perf_counter() + WARMUP_S

    async def worker() -> None:
        nonlocal errors
        while (t0 := time.perf_counter()) < stop_at:
            ok = await one()
            t1 = time.perf_counter()
            if t0 >= measure_from:
                if ok:
                    latencies.append((t1 - t0) * 1000)
                else:
                    errors += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return _stats(latencies, errors)


def _stats(latencies: list[float], errors: int) -> dict:
    latencies.sort()
    n = len(latencies)
    return {
        "requests": n,
        "errors": errors,
        "rps": round(n / DURATION_S, 1),
        "p50_ms": round(statistics.median(latencies), 2) if n else None,
        "p95_ms": round(latencies[int(0.95 * n) - 1], 2) if n else None,
        "p99_ms": round(latencies[max(0, int(0.99 * n) - 1)], 2) if n else None,
    }


def main(out_dir: Path) -> dict:
    from control.config import parse_config, ray_environment

    names = [n for n in os.environ.get("FOUNDRY_BENCH_TARGETS", "direct,foundry,litellm").split(",") if n]
    if CLIENT not in ("aiohttp", "httpx"):
        raise ValueError(f"FOUNDRY_BENCH_CLIENT: aiohttp or httpx (got {CLIENT!r})")
    unknown = set(names) - {"direct", "foundry", "litellm", "floor"}
    if unknown or "direct" not in names or ("floor" in names and "foundry" not in names):
        raise ValueError(f"FOUNDRY_BENCH_TARGETS: direct plus any of foundry, litellm, floor (with foundry) (got {names})")
    work = Path(tempfile.mkdtemp(prefix="foundry-bench-litellm-"))
    up_port, gw_port, ll_port = free_port(), free_port(), free_port()
    procs: list[subprocess.Popen] = []
    stack = None
    try:
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "tests.fakes.upstreams", "openai", "--port", str(up_port), "--latency-ms", "5"],
                cwd=HERE.parent,
                start_new_session=True,
            )
        )
        upstream = f"http://127.0.0.1:{up_port}/v1"
        wait_http(f"http://127.0.0.1:{up_port}/v1/models", 30, ok=(200, 404, 405))
        auth = {"Authorization": f"Bearer {KEY}"}
        targets = {"direct": (f"{upstream}/chat/completions", {})}

        if "litellm" in names:
            litellm = ensure_litellm()
            (work / "litellm.yaml").write_text(
                "model_list:\n"
                "  - model_name: bench\n"
                "    litellm_params:\n"
                "      model: openai/bench\n"
                f"      api_base: {upstream}\n"
                "      api_key: upstream-key\n"
                "general_settings:\n"
                f"  master_key: {KEY}\n"
                "litellm_settings:\n"
                "  set_verbose: false\n"
            )
            procs.append(
                subprocess.Popen(
                    [str(litellm), "--config", str(work / "litellm.yaml"), "--port", str(ll_port), "--num_workers", "1"],
                    cwd=work,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                    env={**os.environ, "LITELLM_LOG": "ERROR"},
                )
            )

        if "foundry" in names:
            os.environ["FOUNDRY_ADMIN_KEY"] = KEY
            os.environ["BENCH_UPSTREAM_KEY"] = "upstream-key"
            cfg = parse_config(
                '[server]\nport = %d\n[gateway]\nnum_cpus = 0.5\nreplicas = %d\n'
                '[models.bench.providers.up]\ntype = "openai"\nbase_url = "%s"\napi_key_env = "BENCH_UPSTREAM_KEY"\n'
                % (gw_port, GATEWAY_REPLICAS, upstream),
                source="<bench>",
                base_dir=work,
            )
            for name, value in ray_environment(cfg).items():
                os.environ.setdefault(name, value)  # before ray.serve is imported
            from control.stack import Stack

            stack = Stack(cfg, home=work / "home", port=gw_port)
            stack.start()
            targets["foundry"] = (f"http://127.0.0.1:{gw_port}/v1/chat/completions", auth)
        if "floor" in names:
            from ray import serve

            from benchmarks.serve_floor import build_floor

            floor = build_floor(f"{upstream}/chat/completions", num_cpus=cfg.gateway.num_cpus)
            serve.run(floor, name="floor", route_prefix="/floor")
            targets["floor"] = (f"http://127.0.0.1:{gw_port}/floor/chat/completions", {})
        if "litellm" in names:
            wait_http(f"http://127.0.0.1:{ll_port}/health/liveliness", 120)
            targets["litellm"] = (f"http://127.0.0.1:{ll_port}/v1/chat/completions", auth)

        results: dict = {}
        for concurrency in CONCURRENCIES:
            for stream in (False, True):
                mode = f"{'stream' if stream else 'non_stream'}_c{concurrency}"
                results[mode] = {
                    name: asyncio.run(load(url, hdrs, stream, concurrency)) for name, (url, hdrs) in targets.items()
                }
                results[mode]["loadavg_1m"] = round(os.getloadavg()[0], 2)
    finally:
        if stack is not None:
            stack.stop()
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)

    params = {"concurrency": list(CONCURRENCIES), "duration_s": DURATION_S, "upstream_latency_ms": 5,
              "targets": names, "client": CLIENT,
              "gateway_replicas": GATEWAY_REPLICAS, "litellm": LITELLM_SPEC}  # fmt: skip
    return write(out_dir, "gateway_vs_litellm", params, results, summarize(results))


def _ratio(a: float | None, b: float | None, digits: int = 2) -> float | None:
    return round(a / b, digits) if a and b else None


def summarize(results: dict) -> dict:
    """Per mode: each gateway against direct (req/s ratio, p50 overhead) and Foundry against
    LiteLLM; then Foundry's req/s at the highest concurrency over its own at the lowest."""
    summary: dict = {}
    for mode, r in results.items():
        d = r["direct"]
        row: dict = {"direct_rps": d["rps"], "direct_p50_ms": d["p50_ms"], "loadavg_1m": r.get("loadavg_1m")}
        for name in ("foundry", "litellm", "floor"):
            if name in r:
                g = r[name]
                row[f"{name}_rps"] = g["rps"]
                row[f"{name}_p50_ms"] = g["p50_ms"]
                row[f"{name}_p99_ms"] = g["p99_ms"]
                row[f"{name}_over_direct_rps"] = _ratio(g["rps"], d["rps"])
                row[f"{name}_p50_overhead_ms"] = (
                    round(g["p50_ms"] - d["p50_ms"], 2) if g["p50_ms"] and d["p50_ms"] else None
                )
        if "foundry" in r and "floor" in r:
            row["rps_ratio_foundry_over_floor"] = _ratio(r["foundry"]["rps"], r["floor"]["rps"])
        if "foundry" in r and "litellm" in r:
            row["rps_ratio_foundry_over_litellm"] = _ratio(r["foundry"]["rps"], r["litellm"]["rps"])
            row["p50_ratio_foundry_over_litellm"] = _ratio(r["foundry"]["p50_ms"], r["litellm"]["p50_ms"], 3)
        row["errors"] = {k: v["errors"] for k, v in r.items() if isinstance(v, dict)}
        summary[mode] = row
    low, high = min(CONCURRENCIES), max(CONCURRENCIES)
    for kind in ("non_stream", "stream"):
        a, b = results.get(f"{kind}_c{high}", {}), results.get(f"{kind}_c{low}", {})
        if "foundry" in a and "foundry" in b:
            summary[f"{kind}_foundry_c{high}_over_c{low}_rps"] = _ratio(a["foundry"]["rps"], b["foundry"]["rps"])
    return summary
