"""Gateway speed against LiteLLM proxy, side by side, in one run.

One OpenAI-compatible upstream (tests/fakes/upstreams.py) answers every request after 5 ms.
Three ways to reach it, each driven closed-loop at concurrency 16, streamed and not:

    direct    client → upstream
    foundry   client → Ray Serve proxy → Foundry gateway replica → upstream
    litellm   client → LiteLLM proxy (one worker) → upstream

Both gateways authenticate a key (LiteLLM's master key, a Foundry admin key) and route to the
same upstream; Foundry also records every request in its metrics store. LiteLLM is installed
into its own virtualenv (benchmarks/.venv-litellm) the first time this runs.

Reported: requests/s, p50/p95 latency, errors, and the ratios foundry/litellm and each gateway's
overhead over direct.
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
from pathlib import Path

import httpx

from benchmarks._meta import write

HERE = Path(__file__).resolve().parent
LITELLM_VENV = HERE / ".venv-litellm"
LITELLM_SPEC = "litellm[proxy]==1.108.7"
CONCURRENCY = 16
DURATION_S = float(os.environ.get("FOUNDRY_BENCH_DURATION_S", "12"))
WARMUP_S = 2.0
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


async def load(url: str, headers: dict, stream: bool) -> dict:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    body = {**BODY, "stream": stream}
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        stop_at = time.perf_counter() + WARMUP_S + DURATION_S
        measure_from = time.perf_counter() + WARMUP_S

        async def worker() -> None:
            nonlocal errors
            while (t0 := time.perf_counter()) < stop_at:
                try:
                    if stream:
                        async with client.stream("POST", url, json=body, headers=headers) as r:
                            async for _ in r.aiter_raw():
                                pass
                            ok = r.status_code == 200
                    else:
                        r = await client.post(url, json=body, headers=headers)
                        ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                t1 = time.perf_counter()
                if t0 >= measure_from:
                    if ok:
                        latencies.append((t1 - t0) * 1000)
                    else:
                        errors += 1

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    latencies.sort()
    n = len(latencies)
    return {
        "requests": n,
        "errors": errors,
        "rps": round(n / DURATION_S, 1),
        "p50_ms": round(statistics.median(latencies), 2) if n else None,
        "p95_ms": round(latencies[int(0.95 * n) - 1], 2) if n else None,
    }


def main(out_dir: Path) -> dict:
    from control.config import parse_config, ray_environment

    litellm = ensure_litellm()
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

        os.environ["FOUNDRY_ADMIN_KEY"] = KEY
        os.environ["BENCH_UPSTREAM_KEY"] = "upstream-key"
        cfg = parse_config(
            '[server]\nport = %d\n[gateway]\nnum_cpus = 0.5\n'
            '[models.bench.providers.up]\ntype = "openai"\nbase_url = "%s"\napi_key_env = "BENCH_UPSTREAM_KEY"\n'
            % (gw_port, upstream),
            source="<bench>",
            base_dir=work,
        )
        for name, value in ray_environment(cfg).items():
            os.environ.setdefault(name, value)  # before ray.serve is imported
        from control.stack import Stack

        stack = Stack(cfg, home=work / "home", port=gw_port)
        stack.start()

        auth = {"Authorization": f"Bearer {KEY}"}
        wait_http(f"http://127.0.0.1:{ll_port}/health/liveliness", 120)
        targets = {
            "direct": (f"{upstream}/chat/completions", {}),
            "foundry": (f"http://127.0.0.1:{gw_port}/v1/chat/completions", auth),
            "litellm": (f"http://127.0.0.1:{ll_port}/v1/chat/completions", auth),
        }
        results: dict = {}
        for stream in (False, True):
            mode = "stream" if stream else "non_stream"
            results[mode] = {name: asyncio.run(load(url, hdrs, stream)) for name, (url, hdrs) in targets.items()}
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

    summary = {}
    for mode, r in results.items():
        f, lt, d = r["foundry"], r["litellm"], r["direct"]
        summary[mode] = {
            "foundry_rps": f["rps"],
            "litellm_rps": lt["rps"],
            "direct_rps": d["rps"],
            "rps_ratio_foundry_over_litellm": round(f["rps"] / lt["rps"], 2) if lt["rps"] else None,
            "p50_ratio_foundry_over_litellm": round(f["p50_ms"] / lt["p50_ms"], 3) if lt["p50_ms"] else None,
            "foundry_p50_overhead_ms": round(f["p50_ms"] - d["p50_ms"], 2) if f["p50_ms"] and d["p50_ms"] else None,
            "litellm_p50_overhead_ms": round(lt["p50_ms"] - d["p50_ms"], 2) if lt["p50_ms"] and d["p50_ms"] else None,
            "errors": {k: v["errors"] for k, v in r.items()},
        }
    params = {"concurrency": CONCURRENCY, "duration_s": DURATION_S, "upstream_latency_ms": 5, "litellm": LITELLM_SPEC}
    return write(out_dir, "gateway_vs_litellm", params, results, summary)
