"""The optimizer's pipeline actions, ``simulate`` and ``benchmark``, over :mod:`tune`'s public API.

``pipelines`` may not import ``tune`` (the packages are independent layers), so the control
plane registers these: ``foundry up`` names this module as a plugin of the executor actor,
which imports it before it starts. Importing registers both actions::

    - id: plan
      action: simulate            # the optimizer's search; outputs the chosen configuration
      params: {model: meta-llama/Llama-3.1-8B-Instruct, gpus: [h100_sxm], num_gpus: 8,
               isl: 1024, osl: 256, concurrency: 64, slo_ttft_ms: 500, slo_tpot_ms: 30}
    - id: measure
      action: benchmark           # `foundry bench` against an endpoint; rows to the metrics store
      params: {base_url: "http://127.0.0.1:8000/v1", model: foundry-tiny, concurrency: [1, 4]}
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipelines import ActionContext, ActionError, register_action

METRICS_TIMEOUT_S = 60.0


class SimulateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    gpus: list[str] | str
    num_gpus: int = Field(ge=1)
    isl: int = Field(ge=1)
    osl: int = Field(ge=1)
    concurrency: int = Field(ge=1)
    slo_ttft_ms: float = Field(gt=0)
    slo_tpot_ms: float = Field(gt=0)
    slo_e2e_ms: float | None = None
    objective: str = "throughput_per_gpu"
    search: Literal["ga", "grid"] = "ga"
    seed: int = 0


class BenchmarkParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: str
    model: str
    isl: int = Field(default=128, ge=1)
    osl: int = Field(default=64, ge=1)
    concurrency: list[int] | int = [1]
    requests: int = Field(default=16, ge=1)
    api_key_env: str | None = Field(default=None, description="environment variable holding the endpoint's key")
    endpoint: Literal["chat", "completions"] = "chat"
    model_path: str | None = None
    store: bool = Field(default=True, description="also write the rows to the stack's metrics store")


async def simulate(ctx: ActionContext, params: dict) -> dict:
    """The optimizer's search (prediction only); outputs the chosen configuration and the front."""
    import tune

    gpus = params["gpus"]
    try:
        space = tune.SearchSpace(
            model=params["model"],
            gpus=tuple(gpus.split(",") if isinstance(gpus, str) else gpus),
            num_gpus=params["num_gpus"], isl=params["isl"], osl=params["osl"],
            concurrency=params["concurrency"], slo_ttft_ms=params["slo_ttft_ms"],
            slo_tpot_ms=params["slo_tpot_ms"], slo_e2e_ms=params["slo_e2e_ms"], objective=params["objective"],
        )  # fmt: skip
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ActionError(f"params.{'.'.join(map(str, first['loc']))}: {first['msg']}", retryable=False) from None
    except tune.TuneError as exc:
        raise ActionError(str(exc), retryable=False) from None
    await ctx.progress(10)
    try:  # CPU work: off the event loop
        result = await asyncio.to_thread(tune.optimize, space, search=params["search"], seed=params["seed"])
    except tune.TuneError as exc:
        raise ActionError(str(exc), retryable=False) from None
    return result.to_json()


async def benchmark(ctx: ActionContext, params: dict) -> dict:
    """`foundry bench` against an OpenAI-compatible endpoint; the rows go to the metrics store."""
    import tune

    levels = params["concurrency"] if isinstance(params["concurrency"], list) else [params["concurrency"]]
    api_key = os.environ.get(params["api_key_env"]) if params["api_key_env"] else None
    try:
        config = tune.BenchConfig(
            base_url=params["base_url"], model=params["model"], isl=params["isl"], osl=params["osl"],
            concurrency=tuple(levels), requests=params["requests"], api_key=api_key,
            endpoint=params["endpoint"], model_path=params["model_path"],
        )  # fmt: skip
    except tune.TuneError as exc:
        raise ActionError(str(exc), retryable=False) from None
    total = params["requests"] * len(levels)
    done = 0
    loop = asyncio.get_running_loop()

    def on_done(level: int, record: Any) -> None:
        nonlocal done
        done += 1
        if done % max(1, total // 20) == 0:
            loop.create_task(ctx.progress(100.0 * done / total))

    try:
        results = await tune.run_bench(config, on_done=on_done)
    except tune.TuneError as exc:
        raise ActionError(str(exc)) from None
    rows = tune.bench_rows(config, results)
    # keyed by run and step: a step re-run after a crash (it measures again) stores once
    token = hashlib.sha256(ctx.idempotency_key.encode()).hexdigest()
    stored = await _store_rows(rows, token) if params["store"] else 0
    return {"rows": rows, "stored": stored}


async def _store_rows(rows: list[dict], token: str) -> int:
    """Into the stack's metrics store (the actor ``foundry up`` started), when there is one."""
    import ray

    from serve.metrics.actor import ACTOR_NAME, MetricsClient

    if not ray.is_initialized():
        return 0
    try:
        actor = ray.get_actor(ACTOR_NAME, namespace="foundry")
    except ValueError:
        return 0
    return await asyncio.wait_for(MetricsClient(actor).insert_benchmarks(rows, token), METRICS_TIMEOUT_S)


register_action("simulate", simulate, params=SimulateParams)
register_action("benchmark", benchmark, params=BenchmarkParams)
