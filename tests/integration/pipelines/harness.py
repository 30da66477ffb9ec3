"""Shared by the pipeline tests: an engine on SQLite or PostgreSQL, a registry with a timed
action, and waiting for a run to reach a state (bounded, never a fixed sleep)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import psycopg

from pipelines import ActionContext, ActionRegistry
from pipelines.builtin_actions import register_builtins
from pipelines.engine import PipelineEngine

WAIT_TIMEOUT_S = 60.0


async def busy(ctx: ActionContext, params: dict) -> dict:
    """Work for `seconds` (reporting progress halfway); outputs when it ran."""
    started = time.time()
    await asyncio.sleep(params.get("seconds", 0.2) / 2)
    await ctx.progress(50)
    await asyncio.sleep(params.get("seconds", 0.2) / 2)
    return {"started": started, "finished": time.time(), "key": ctx.idempotency_key}


def registry() -> ActionRegistry:
    actions = ActionRegistry()
    register_builtins(actions)
    actions.register("busy", busy)
    return actions


def database_url(backend: str, tmp: Path, postgres_url: str | None) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp / 'pipelines.db'}"
    assert postgres_url is not None
    name = f"pipelines_{uuid.uuid4().hex[:10]}"
    port = int(postgres_url.rsplit(":", 1)[1].split("/", 1)[0])
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{postgres_url.rsplit('/', 1)[0]}/{name}"


@asynccontextmanager
async def running_engine(
    url: str, actions: ActionRegistry | None = None, executor_id: str | None = None, plugins: dict | None = None
) -> AsyncIterator[PipelineEngine]:
    engine = PipelineEngine(
        url, executor_id=executor_id or f"test-{uuid.uuid4().hex[:8]}", registry=actions or registry(), plugins=plugins
    )
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()


async def wait_run(engine, run_id: str, done: Callable[[dict], bool], timeout_s: float = WAIT_TIMEOUT_S) -> dict:
    """The run once ``done(run)`` holds; the runs seen on the way are in ``seen`` of the result."""
    deadline = time.monotonic() + timeout_s
    run = await engine.get_run(run_id)
    seen = [run]
    while not done(run):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"run {run_id} did not reach the state in {timeout_s}s: {run}")
        run = await engine.wait_for_change(run_id, run["version"], min(left, 5.0))
        seen.append(run)
    run["seen"] = seen
    return run


def finished(run: dict) -> bool:
    return run["status"] in ("succeeded", "failed", "cancelled")
