"""The executor as a Ray actor, and the client the control API holds.

``foundry up`` starts one :class:`PipelineExecutor` (named ``foundry-pipelines``; detached when
the stack joins an existing cluster) that owns the process's DBOS instance; control replicas
reach it through :class:`PipelinesClient`. The first start waits for ``ready()`` (the stack
calls it once what resumed steps need is up). Ray restarts the actor if its process dies
(``max_restarts=-1``); a restarted actor launches DBOS at once, on its own, which resumes the
executor's unfinished runs without waiting for a call. ``plugins`` are modules imported in the
actor before it starts, so packages this one may not import (the control plane's
``simulate``/``benchmark`` and deployment actions) can register their actions there. Given as a
dict, each module's settings are passed to its ``configure(**settings)`` (where its actions
find the control database, say), here and in the Ray workers of ``run_on: ray`` steps.

    control replica ──PipelinesClient──► PipelineExecutor (Ray actor) ──► PipelineEngine ──► DBOS
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from typing import Any

import ray

from pipelines.dispatch import configure_plugins
from pipelines.engine import PipelineEngine
from pipelines.errors import ExecutorUnavailable, PipelineError

__all__ = ["ACTOR_NAME", "PipelineExecutor", "PipelinesClient"]

log = logging.getLogger(__name__)

ACTOR_NAME = "foundry-pipelines"
CALL_TIMEOUT_S = 60.0
START_TIMEOUT_S = 300.0


@ray.remote(num_cpus=0, max_concurrency=1000, max_restarts=-1, max_task_retries=0)
class PipelineExecutor:
    def __init__(
        self, database_url: str, executor_id: str, plugins: list[str] | tuple[str, ...] | dict[str, dict] = ()
    ) -> None:
        settings = plugins if isinstance(plugins, dict) else dict.fromkeys(plugins, {})
        configure_plugins(settings)
        self._plugins = list(settings)
        self._engine = PipelineEngine(database_url, executor_id=executor_id, plugins=settings)
        self._start_lock: asyncio.Lock | None = None
        self._started = False
        self._restart: asyncio.Task | None = None
        if ray.get_runtime_context().was_current_actor_reconstructed:
            # Restarted by Ray after its process died: resume the runs now, not at the next call.
            self._restart = asyncio.get_running_loop().create_task(self._resume())

    async def _resume(self) -> None:
        try:
            await self._ensure_started()
        except Exception:  # the next call tries again, and reports the error to its caller
            log.exception("the restarted pipeline executor could not start")

    async def _ensure_started(self) -> PipelineEngine:
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if not self._started:
                await self._engine.start()
                self._started = True
        return self._engine

    async def ready(self) -> bool:
        await self._ensure_started()
        return True

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        engine = await self._ensure_started()
        return await getattr(engine, method)(*args, **kwargs)

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self._engine.stop()
        for name in self._plugins:  # a plugin's ``async close()``: its connections, say
            close = getattr(importlib.import_module(name), "close", None)
            if close is not None:
                await close()


class PipelinesClient:
    """Async access to the executor actor with the engine's API; picklable, so it travels to
    control replicas. Errors come back as the engine raised them (:class:`PipelineError`)."""

    _METHODS = frozenset({
        "create_pipeline", "list_pipelines", "get_pipeline", "start_run", "get_run", "list_runs",
        "cancel_run", "send_event", "wait_for_change", "actions",
    })  # fmt: skip

    def __init__(self, actor: ray.actor.ActorHandle, *, timeout_s: float = CALL_TIMEOUT_S) -> None:
        self._actor = actor
        self._timeout_s = timeout_s

    async def _call(self, method: str, *args: Any, extra_timeout_s: float = 0.0, **kwargs: Any) -> Any:
        try:
            return await asyncio.wait_for(self._actor.call.remote(method, *args, **kwargs), self._timeout_s + extra_timeout_s)
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(exc.cause, BaseException) else None
            if isinstance(cause, PipelineError):
                raise cause from None
            raise
        except (ray.exceptions.RayActorError, TimeoutError) as exc:
            raise ExecutorUnavailable(f"the pipeline executor did not answer: {type(exc).__name__}") from None

    def __getattr__(self, name: str):
        if name not in self._METHODS:
            raise AttributeError(name)
        if name == "wait_for_change":
            async def wait(run_id: str, after_version: int, timeout_s: float = 15.0) -> dict:
                return await self._call(name, run_id, after_version, timeout_s, extra_timeout_s=timeout_s)

            return wait

        async def method(*args: Any, **kwargs: Any) -> Any:
            return await self._call(name, *args, **kwargs)

        return method
