"""The built-in actions, registered in :data:`pipelines.actions.default_registry`.

    log             message, level            logs the message; outputs {message}
    set_output      any keys                  its params become its outputs
    transform       input, expression         a Jinja expression over ``input``; outputs {result}
    fail            message                   fails the step with the message (retried like any failure)
    sleep           seconds                   a durable wait (a crash does not restart it)
    wait_until      at (ISO-8601)             a durable wait until that time
    wait_for_event  name, timeout_s           completes when the event is sent to the run; outputs = its data
    http_request    method, url, headers,     one HTTP call with ``Idempotency-Key: <run id>:<step id>``;
                    json, expect_status,      a 5xx, 408, 429 or a connection error is retried by the
                    timeout_s                 step's retry policy, another unexpected status is not

``simulate`` and ``benchmark`` (the optimizer's search and ``foundry bench``) are registered by
the control plane when the stack starts (``control.pipeline_actions``).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipelines import templating
from pipelines.actions import ActionContext, ActionRegistry
from pipelines.errors import ActionError

log = logging.getLogger("pipelines.actions")

RESPONSE_TEXT_LIMIT = 64_000


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LogParams(_Params):
    message: Any
    level: Literal["debug", "info", "warning", "error"] = "info"


class TransformParams(_Params):
    input: Any = None
    expression: str


class FailParams(_Params):
    message: str = "failed by the pipeline"


class SleepParams(_Params):
    seconds: float = Field(ge=0)


class WaitUntilParams(_Params):
    at: datetime

    @field_validator("at")
    @classmethod
    def _aware(cls, at: datetime) -> datetime:
        if at.tzinfo is None:
            raise ValueError("give a time zone (e.g. 2030-01-01T00:00:00Z)")
        return at


class WaitForEventParams(_Params):
    name: str = Field(min_length=1, max_length=200)
    timeout_s: float = Field(default=7 * 24 * 3600.0, gt=0)


class HttpRequestParams(_Params):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
    url: str
    headers: dict[str, str] = {}
    json_body: Any = Field(default=None, alias="json")
    expect_status: int | list[int] | None = Field(default=None, description="default: any 2xx")
    timeout_s: float = Field(default=30.0, gt=0)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


async def log_action(ctx: ActionContext, params: dict) -> dict:
    """Log a message."""
    level = getattr(logging, params["level"].upper())
    log.log(level, "pipeline run %s step %s: %s", ctx.run_id, ctx.step_id, params["message"])
    return {"message": params["message"]}


async def set_output(ctx: ActionContext, params: dict) -> dict:
    """Its params become its outputs."""
    return dict(params)


async def transform(ctx: ActionContext, params: dict) -> dict:
    """Evaluate a Jinja expression over `input`."""
    try:
        result = templating.render("{{ " + params["expression"] + " }}", {"input": params["input"]})
    except templating.TemplateError as exc:
        raise ActionError(f"params.expression: {exc}", retryable=False) from None
    return {"result": result}


async def fail(ctx: ActionContext, params: dict) -> dict:
    """Fail the step with a message."""
    raise ActionError(params["message"])


async def http_request(ctx: ActionContext, params: dict) -> dict:
    """One HTTP request carrying Idempotency-Key: <run id>:<step id>."""
    headers = {**params["headers"], "Idempotency-Key": ctx.idempotency_key}
    kwargs: dict[str, Any] = {"headers": headers, "timeout": params["timeout_s"]}
    if params["json_body"] is not None:
        kwargs["json"] = params["json_body"]
    try:
        response = await ctx.http.request(params["method"], params["url"], **kwargs)
    except httpx.TimeoutException:
        raise ActionError(f"{params['method']} {params['url']}: no response within {params['timeout_s']:g}s") from None
    except httpx.HTTPError as exc:
        raise ActionError(f"{params['method']} {params['url']}: {type(exc).__name__}: {exc}") from None
    expected = params["expect_status"]
    ok = response.status_code in expected if isinstance(expected, list) else (
        response.status_code == expected if expected is not None else response.is_success
    )
    if not ok:
        retryable = response.status_code >= 500 or response.status_code in (408, 429)
        raise ActionError(
            f"{params['method']} {params['url']}: HTTP {response.status_code}: {response.text[:300]}", retryable=retryable
        )
    try:
        body = response.json() if response.content else None
    except ValueError:
        body = None
    return {"status": response.status_code, "json": body, "text": None if body is not None else response.text[:RESPONSE_TEXT_LIMIT]}


def register_builtins(registry: ActionRegistry) -> None:
    registry.register("log", log_action, params=LogParams)
    registry.register("set_output", set_output)
    registry.register("transform", transform, params=TransformParams)
    registry.register("fail", fail, params=FailParams)
    registry.register("http_request", http_request, params=HttpRequestParams)
    registry.register("sleep", None, params=SleepParams, kind="wait", description="Wait a number of seconds (durable).")
    registry.register("wait_until", None, params=WaitUntilParams, kind="wait", description="Wait until a time (durable).")
    registry.register(
        "wait_for_event", None, params=WaitForEventParams, kind="wait",
        description="Wait until an event with this name is sent to the run; its data become the outputs.",
    )
