"""Actions for the Ray tests, in a module of their own as a plugin of the executor: Ray workers
import it when they unpickle an action, and ``configure`` runs wherever the executor's plugins
are configured (the executor actor, the workers of ``run_on: ray`` steps). ``configure`` also
registers the actions in the default registry, so the executor actor knows them by name."""

from __future__ import annotations

import os

from pipelines import ActionContext, register_action

CONFIGURED: str | None = None  # the marker given to configure() in this process


async def where(ctx: ActionContext, params: dict) -> dict:
    """Where the attempt ran: its process, and the plugin settings that process was given."""
    await ctx.progress(50)
    return {"pid": os.getpid(), "configured": CONFIGURED, "key": ctx.idempotency_key}


async def call(ctx: ActionContext, params: dict) -> dict:
    """POST this process's id to ``url`` with the step's idempotency key; with ``crash``, the
    process then dies, as a worker killed mid-step would."""
    response = await ctx.http.post(params["url"], json={"pid": os.getpid()}, headers={"Idempotency-Key": ctx.idempotency_key})
    if params.get("crash"):
        os._exit(1)
    return {"pid": os.getpid(), "status": response.status_code}


def configure(marker: str) -> None:
    global CONFIGURED
    CONFIGURED = marker
    register_action("test_where", where, replace=True)
    register_action("test_call", call, replace=True)
