"""Gateway hop: the same generation called through the gateway and directly.

Both paths go through Ray Serve's HTTP proxy to the same kind of runtime replica:

    direct:   client → proxy → runtime (HTTP __call__)                  /direct
    gateway:  client → proxy → gateway (auth, validation, metrics) → runtime handle   /v1/completions

The difference is what the gateway adds (one extra replica hop, auth, JSON, metrics).
Sequential requests with a 1-token generation isolate overhead from model time.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks._meta import write

ADMIN_KEY = "sk-fnd-bench-admin-0123456789abcdefghijklmnopqrstuvwx"
N_REQUESTS = 200
WARMUP = 20


def _measure(call, n: int) -> dict:
    for _ in range(WARMUP):
        call()
    lat = []
    t0 = time.perf_counter()
    for _ in range(n):
        s = time.perf_counter()
        call()
        lat.append((time.perf_counter() - s) * 1000)
    wall = time.perf_counter() - t0
    lat.sort()
    return {
        "p50_ms": round(statistics.median(lat), 3),
        "p95_ms": round(lat[int(0.95 * len(lat)) - 1], 3),
        "mean_ms": round(statistics.fmean(lat), 3),
        "rps": round(n / wall, 1),
    }


def main(out_dir: Path) -> dict:
    from control.config import default_config, ray_environment

    cfg = default_config()
    for name, value in ray_environment(cfg).items():
        os.environ.setdefault(name, value)  # before ray.serve is imported
    from ray import serve

    from benchmarks.bench_gateway_vs_litellm import free_port
    from control.stack import Stack
    from serve.runtimes.deployment import build_runtime

    home = Path(tempfile.mkdtemp(prefix="foundry-bench-"))
    os.environ["FOUNDRY_ADMIN_KEY"] = ADMIN_KEY
    port = free_port()
    stack = Stack(cfg, home=home, port=port)
    stack.start()
    try:
        rt = cfg.runtimes["foundry-tiny"]
        serve.run(build_runtime("foundry-tiny", rt, home), name="bench-direct", route_prefix="/direct")
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(timeout=60) as http:
            payload = {"prompt": "Hello there", "max_tokens": 1, "temperature": 0}

            def direct():
                r = http.post(f"{base}/direct", json=payload)
                r.raise_for_status()

            def gateway():
                r = http.post(
                    f"{base}/v1/completions",
                    json={"model": "foundry-tiny", **payload},
                    headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                )
                r.raise_for_status()

            results = {"direct": _measure(direct, N_REQUESTS), "gateway": _measure(gateway, N_REQUESTS)}
    finally:
        stack.stop()
    d, g = results["direct"], results["gateway"]
    summary = {
        "direct_p50_ms": d["p50_ms"],
        "gateway_p50_ms": g["p50_ms"],
        "gateway_overhead_p50_ms": round(g["p50_ms"] - d["p50_ms"], 3),
        "latency_ratio_p50": round(g["p50_ms"] / d["p50_ms"], 3),
        "rps_ratio": round(g["rps"] / d["rps"], 3),
    }
    return write(out_dir, "gateway", {"requests": N_REQUESTS, "max_tokens": 1, "sequential": True}, results, summary)
