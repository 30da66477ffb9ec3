"""Step attempts as Ray tasks: a step with ``run_on: ray`` runs its action in a Ray worker,
anywhere in the cluster, instead of in the executor's process (when Ray is initialised; without
Ray it runs in the executor, as every other step does).

    executor: one attempt (a DBOS step)                  Ray worker: one task per attempt
    ───────────────────────────────────                  ────────────────────────────────
    attempt_on_ray ─── task (max_retries=0) ────────►   plugins imported and configured
                                                          (once per process, as in the executor)
      ctx.progress → the run's view  ◄── ("progress", p)  action(ctx, params)
      outputs, or an ActionError     ◄── ("outputs", {...}) | ("error", message, retryable)
    cancelled (a run's cancel, the step's timeout_s) ──► ray.cancel(force=True)

Retries live in one place: Ray runs each attempt at most once (``max_retries=0``; a worker
that dies is a failed attempt, like an exception) and the step's retry policy, in DBOS,
decides whether to try again. The action is the registry's function, pickled by reference, so
its module is imported in the worker; ``plugins`` (module -> settings for its ``configure``)
are the executor's, so an action finds there what it finds in the executor.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import queue
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import ray

from pipelines.actions import ActionContext, ActionSpec
from pipelines.errors import ActionError

__all__ = ["attempt_on_ray", "configure_plugins"]

HTTP_TIMEOUT_S = 30.0

_configured: set[str] = set()  # plugins configured in this process, with their settings
_loop: asyncio.AbstractEventLoop | None = None  # where a worker runs its attempts (a thread of its own)
_http: httpx.AsyncClient | None = None  # on _loop; made once (a client costs ~50 ms: its TLS context)
_loop_lock = threading.Lock()


def configure_plugins(plugins: dict[str, dict]) -> None:
    """Import each module and call its ``configure(**settings)``, once per process and settings."""
    for name, options in plugins.items():
        key = json.dumps([name, options], sort_keys=True, default=str)
        if key in _configured:
            continue
        module = importlib.import_module(name)
        if hasattr(module, "configure"):
            module.configure(**options)
        _configured.add(key)


async def attempt_on_ray(
    spec: ActionSpec,
    plugins: dict[str, dict],
    ctx: ActionContext,
    params: dict[str, Any],
) -> dict[str, Any]:
    """One attempt of ``spec`` as a Ray task: its outputs, or an :class:`ActionError`."""
    stream = _attempt_task.remote(spec, plugins, ctx.run_id, ctx.step_id, ctx.attempt, params)
    try:
        async for ref in stream:
            message = await ref
            if message[0] == "progress":
                await ctx.progress(message[1])
            elif message[0] == "outputs":
                return message[1]
            else:
                raise ActionError(message[1], retryable=message[2])
    except asyncio.CancelledError:
        ray.cancel(stream, force=True)  # the worker stops with the step; Ray starts another
        raise
    except ray.exceptions.RayError as exc:  # the worker died, or Ray could not run the task
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ActionError(f"the Ray task of the attempt failed: {type(exc).__name__}: {first}") from None
    raise ActionError("the Ray task of the attempt ended without a result")


@ray.remote(max_retries=0, num_returns="streaming")
def _attempt_task(
    spec: ActionSpec, plugins: dict[str, dict], run_id: str, step_id: str, attempt: int, params: dict
) -> Iterator[tuple]:
    """Runs in a Ray worker: the attempt on the worker's event loop (a thread of its own), its
    progress and then its result streamed back as they come."""
    messages: queue.SimpleQueue[tuple] = queue.SimpleQueue()

    async def report(percent: float) -> None:
        messages.put(("progress", percent))

    async def run() -> None:
        try:
            configure_plugins(plugins)
            messages.put(("outputs", await _attempt(spec, run_id, step_id, attempt, params, report)))
        except ActionError as exc:
            messages.put(("error", exc.message, exc.retryable))
        except BaseException as exc:  # a plugin that does not load: named, retryable
            messages.put(("error", f"{type(exc).__name__}: {exc}", True))

    asyncio.run_coroutine_threadsafe(run(), _worker_loop())
    while (message := messages.get())[0] == "progress":
        yield message
    yield message


def _worker_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="pipelines-attempts", daemon=True).start()
        return _loop


async def _attempt(
    spec: ActionSpec,
    run_id: str,
    step_id: str,
    attempt: int,
    params: dict,
    report: Callable[[float], Awaitable[None]],
) -> dict:
    global _http
    if _http is None:
        _http = httpx.AsyncClient(timeout=HTTP_TIMEOUT_S, follow_redirects=False)
    ctx = ActionContext(run_id=run_id, step_id=step_id, attempt=attempt, http=_http, report=report)
    return await spec.run(ctx, params)
