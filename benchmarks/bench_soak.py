"""Soak: 20,000 mixed requests at concurrency 32; memory must not grow, no row may be lost.

The stack runs as a user runs it (``foundry up``, HAProxy ingress) with three models behind the
gateway: ``mock`` (an OpenAI-compatible upstream, tests/fakes/upstreams.py, 5 ms per answer),
``foundry-tiny`` (the CPU engine) and ``all-minilm-l6-v2`` (the embedding engine). Each block of
20 requests mixes:

    8  chat, mock                 4  streamed chat, mock       1 chat + 1 streamed chat, tiny
    3  embeddings (1-4 inputs)    1  unknown model (404)       1 invalid body (400)
    1  unknown key (401)

Reported: requests/s, errors by status, the resident memory of every process of the stack after
warm-up (the first 10%) and at the end, and the metrics rows the store holds against the
requests sent. Targets: every process grows < 10%; rows == requests.

    FOUNDRY_SOAK_REQUESTS=2000 python -m benchmarks.run soak     # a shorter run
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil

from benchmarks._meta import write
from benchmarks.bench_gateway_vs_litellm import free_port, wait_http

HERE = Path(__file__).resolve().parent
REQUESTS = int(os.environ.get("FOUNDRY_SOAK_REQUESTS", "20000"))
CONCURRENCY = 32
WARMUP_FRACTION = 0.1
KEY = "sk-fnd-soak-admin-0123456789abcdefghijklmnopqrstuvwxyz"
MAX_GROWTH = 0.10
ROWS_TIMEOUT_S = 120

CONFIG = """
[server]
port = {port}
[gateway]
num_cpus = 0.5
[runtimes."foundry-tiny"]
engine = "cpu"
task = "generate"
model = "builtin:foundry-tiny"
num_cpus = 0.5
[runtimes."all-minilm-l6-v2"]
engine = "cpu"
task = "embed"
model = "builtin:all-minilm-l6-v2"
num_cpus = 0.3
[models.mock.providers.up]
type = "openai"
base_url = "{upstream}"
api_key_env = "SOAK_UPSTREAM_KEY"
[models."foundry-tiny".providers.local]
type = "local"
[models."all-minilm-l6-v2".providers.local]
type = "local"
"""

CHAT = [{"role": "user", "content": "Tell me something short."}]


def request(i: int) -> tuple[str, dict, dict, bool]:
    """(path, json body or raw marker, headers, stream) of the i-th request of the mix."""
    auth = {"Authorization": f"Bearer {KEY}"}
    k = i % 20
    if k < 8:
        return "/chat/completions", {"model": "mock", "messages": CHAT, "max_tokens": 16}, auth, False
    if k < 12:
        body = {"model": "mock", "messages": CHAT, "max_tokens": 16, "stream": True, "stream_options": {"include_usage": True}}
        return "/chat/completions", body, auth, True
    if k < 14:
        return "/chat/completions", {"model": "foundry-tiny", "messages": CHAT, "max_tokens": 4, "stream": k == 13}, auth, k == 13
    if k < 17:
        return "/embeddings", {"model": "all-minilm-l6-v2", "input": ["a cat", "a dog", "a bird", "a fish"][: 1 + i % 4]}, auth, False
    if k == 17:
        return "/chat/completions", {"model": "no-such-model", "messages": CHAT}, auth, False
    if k == 18:
        return "/chat/completions", {"model": "mock", "messages": []}, auth, False
    return "/chat/completions", {"model": "mock", "messages": CHAT}, {"Authorization": "Bearer sk-fnd-unknown"}, False


def stack_processes(root: psutil.Process, home: Path) -> dict[int, str]:
    """``foundry up`` and everything it started (Ray, its workers, Serve's HAProxy)."""
    from control.leftovers import haproxy_dir

    ours = f"{haproxy_dir(home)}/"
    procs = {root.pid: "foundry up"}
    for child in root.children(recursive=True):
        try:
            procs[child.pid] = " ".join(child.cmdline()[:2])[-80:]
        except psutil.Error:
            pass
    for proc in psutil.process_iter(["pid", "cmdline"]):  # HAProxy is reparented to init
        cmd = proc.info["cmdline"] or []
        if cmd and "haproxy" in Path(cmd[0]).name and any(a.startswith(ours) for a in cmd) and proc.pid not in procs:
            procs[proc.pid] = "haproxy"
    return procs


def rss(pids: dict[int, str]) -> dict[int, int]:
    out = {}
    for pid in pids:
        try:
            out[pid] = psutil.Process(pid).memory_info().rss
        except psutil.Error:
            pass
    return out


async def drive(base: str, n: int, on_warm) -> tuple[Counter, float]:
    statuses: Counter = Counter()
    next_i = 0
    warm_at = int(n * WARMUP_FRACTION)
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    t_start = 0.0
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as client:

        async def worker() -> None:
            nonlocal next_i, t_start
            while next_i < n:
                i, next_i = next_i, next_i + 1
                if i == warm_at:
                    on_warm()
                    t_start = time.perf_counter()
                path, body, headers, stream = request(i)
                try:
                    if stream:
                        async with client.stream("POST", path, json=body, headers=headers) as r:
                            async for _ in r.aiter_raw():
                                pass
                    else:
                        r = await client.post(path, json=body, headers=headers)
                    statuses[r.status_code] += 1
                except httpx.HTTPError as exc:
                    statuses[type(exc).__name__] += 1

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return statuses, time.perf_counter() - t_start


def main(out_dir: Path) -> dict:
    work = Path(tempfile.mkdtemp(prefix="foundry-bench-soak-"))
    up_port, port = free_port(), free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.upstreams", "openai", "--port", str(up_port), "--latency-ms", "5"],
        cwd=HERE.parent, start_new_session=True,
    )  # fmt: skip
    (work / "foundry.toml").write_text(CONFIG.format(port=port, upstream=f"http://127.0.0.1:{up_port}/v1"))
    env = {**os.environ, "FOUNDRY_HOME": str(work / "home"), "FOUNDRY_ADMIN_KEY": KEY, "SOAK_UPSTREAM_KEY": "k"}
    env.pop("RAY_ADDRESS", None)
    log = open(work / "up.log", "w")
    up = subprocess.Popen(
        [str(Path(sys.executable).with_name("foundry")), "up", "--config", str(work / "foundry.toml")],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{up_port}/v1/models", 30, ok=(200, 404, 405))
        deadline = time.monotonic() + 300
        while "Foundry is up" not in (work / "up.log").read_text():
            if up.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("foundry up did not start:\n" + (work / "up.log").read_text()[-3000:])
            time.sleep(1)
        base = f"http://127.0.0.1:{port}/v1"
        before: dict[int, int] = {}
        procs: dict[int, str] = {}

        def warm() -> None:
            procs.update(stack_processes(psutil.Process(up.pid), work / "home"))
            before.update(rss(procs))

        statuses, wall_s = asyncio.run(drive(base, REQUESTS, warm))
        after = rss(procs)
        rows, waited = 0, time.monotonic()
        while time.monotonic() - waited < ROWS_TIMEOUT_S:
            usage = httpx.get(f"http://127.0.0.1:{port}/api/usage", headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
            rows = usage.json()["requests"]
            if rows >= REQUESTS:
                break
            time.sleep(1)
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
            try:
                up.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)
        os.killpg(upstream.pid, signal.SIGTERM)
        upstream.wait(20)
        log.close()
        shutil.rmtree(work, ignore_errors=True)

    growth = {
        f"{pid} {procs[pid]}": round(after[pid] / before[pid] - 1, 4) for pid in before if pid in after and before[pid]
    }
    worst = max(growth.values(), default=0.0)
    measured = REQUESTS - int(REQUESTS * WARMUP_FRACTION)
    summary = {
        "requests": REQUESTS,
        "rps_after_warmup": round(measured / wall_s, 1) if wall_s else None,
        "statuses": {str(k): v for k, v in sorted(statuses.items(), key=str)},
        "processes": len(growth),
        "worst_rss_growth": worst,
        "rss_growth_under_10pct": worst < MAX_GROWTH,
        "metrics_rows": rows,
        "rows_equal_requests": rows == REQUESTS,
    }
    results = {
        "rss_before_mb": {f"{pid} {procs[pid]}": round(v / 2**20, 1) for pid, v in before.items()},
        "rss_after_mb": {f"{pid} {procs[pid]}": round(v / 2**20, 1) for pid, v in after.items()},
        "rss_growth": growth,
    }
    params = {"requests": REQUESTS, "concurrency": CONCURRENCY, "warmup_fraction": WARMUP_FRACTION, "upstream_latency_ms": 5}
    return write(out_dir, "soak", params, results, summary)
