"""The pipelines part of the control API (mounted under ``/api/pipelines``, admin key required).

    POST /pipelines                              a definition -> {"id", "version", "name"} (a new version per name)
    GET  /pipelines                              latest version of each definition
    GET  /pipelines/actions                      the actions the executor knows
    GET  /pipelines/runs                         recent runs (?pipeline_id=)
    GET  /pipelines/runs/{run_id}                a run: status, progress, eta_s, steps, version
    POST /pipelines/runs/{run_id}/cancel         {"version"?} -> the run; 409 if it lost a race or is final
    POST /pipelines/runs/{run_id}/events/{name}  {"data", "version"?} -> the run; 409 if sent before
    GET  /pipelines/runs/{run_id}/stream         Server-Sent Events until the run ends
    GET  /pipelines/{id}                         a definition (latest version, or ?version=)
    POST /pipelines/{id}/runs                    {"params"} -> the new run

The executor is reached through a :class:`PipelinesService` (:class:`pipelines.actor.PipelinesClient`
in the stack, :class:`pipelines.engine.PipelineEngine` in tests); its errors become the control
API's error shape here.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Body, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from control.errors import Conflict, ControlError, InvalidRequest, NotFound
from control.schemas import ErrorResponse
from pipelines.definition import PipelineDefinition
from pipelines.errors import PipelineError

RUN_FINAL = ("succeeded", "failed", "cancelled")
STREAM_POLL_S = 15.0


class PipelinesUnavailable(ControlError):
    status = 503
    type = "server_error"
    code = "pipelines_unavailable"


class PipelinesService(Protocol):
    async def create_pipeline(self, definition: dict) -> dict: ...
    async def list_pipelines(self) -> list[dict]: ...
    async def get_pipeline(self, pipeline_id: str, version: int | None = None) -> dict: ...
    async def start_run(self, pipeline_id: str, params: dict | None = None) -> dict: ...
    async def get_run(self, run_id: str) -> dict: ...
    async def list_runs(self, pipeline_id: str | None = None, limit: int = 100) -> list[dict]: ...
    async def cancel_run(self, run_id: str, expected_version: int | None = None) -> dict: ...
    async def send_event(self, run_id: str, name: str, data: Any = None, expected_version: int | None = None) -> dict: ...
    async def wait_for_change(self, run_id: str, after_version: int, timeout_s: float = 15.0) -> dict: ...
    async def actions(self) -> list[dict]: ...


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunCreate(_Body):
    params: dict[str, Any] = {}


# a run's stored version (a BIGINT)
ExpectedVersion = Annotated[int | None, Field(ge=0, lt=2**63, description="refuse (409) unless the run is still at this version")]


class RunCancel(_Body):
    version: ExpectedVersion = None


class EventSend(_Body):
    data: Any = None
    version: ExpectedVersion = None


_ERRORS: dict[int, type[ControlError]] = {400: InvalidRequest, 404: NotFound, 409: Conflict, 503: PipelinesUnavailable}


def control_error(exc: PipelineError) -> ControlError:
    return _ERRORS.get(exc.status, ControlError)(exc.message, param=exc.param, code=exc.code)


def _service(request: Request) -> PipelinesService:
    service = getattr(request.app.state, "pipelines", None)
    if service is None:
        raise PipelinesUnavailable("pipelines are not enabled on this control API")
    return service


async def _call(request: Request, method: str, *args: Any, **kwargs: Any) -> Any:
    try:
        return await getattr(_service(request), method)(*args, **kwargs)
    except PipelineError as exc:
        raise control_error(exc) from None


RunId = Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


def _inlined(schema: dict) -> dict:
    """``schema`` with its ``$defs`` references replaced by what they name (the definition's
    models are not recursive), so it stands alone inside the OpenAPI document."""
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return inline(schema)


# What a definition looks like; what it may do (known actions, their params, an acyclic DAG,
# template references) is checked by the executor, which answers 400 naming the step and key.
_DEFINITION_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": _inlined(PipelineDefinition.model_json_schema())}},
    }
}

_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Invalid request or definition; `param` names the step and key"},
    404: {"model": ErrorResponse, "description": "Unknown pipeline or run"},
    409: {"model": ErrorResponse, "description": "The run moved on (version) or is final, or the event was sent before"},
    503: {"model": ErrorResponse, "description": "Pipelines are not enabled, or the executor is unavailable"},
}


def router() -> APIRouter:
    api = APIRouter(prefix="/pipelines", tags=["pipelines"], responses=_RESPONSES)

    @api.post("", status_code=201, openapi_extra=_DEFINITION_BODY)
    async def create_pipeline(request: Request, definition: Annotated[dict[str, Any], Body()]) -> dict:
        """Store a pipeline definition (JSON; `foundry pipelines run FILE` also reads YAML).
        Refused with 400 naming the step and key when it cannot run."""
        return await _call(request, "create_pipeline", definition)

    @api.get("")
    async def list_pipelines(request: Request) -> dict:
        return {"object": "list", "data": await _call(request, "list_pipelines")}

    @api.get("/actions")
    async def list_actions(request: Request) -> dict:
        return {"object": "list", "data": await _call(request, "actions")}

    @api.get("/runs")
    async def list_runs(
        request: Request,
        pipeline_id: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict:
        return {"object": "list", "data": await _call(request, "list_runs", pipeline_id, limit)}

    @api.get("/runs/{run_id}")
    async def get_run(request: Request, run_id: RunId) -> dict:
        return await _call(request, "get_run", run_id)

    @api.post("/runs/{run_id}/cancel")
    async def cancel_run(request: Request, run_id: RunId, body: RunCancel | None = None) -> dict:
        return await _call(request, "cancel_run", run_id, body.version if body else None)

    @api.post("/runs/{run_id}/events/{name}")
    async def send_event(
        request: Request, run_id: RunId, name: Annotated[str, Path(max_length=200)], body: EventSend | None = None
    ) -> dict:
        body = body or EventSend()
        return await _call(request, "send_event", run_id, name, body.data, body.version)

    @api.get("/runs/{run_id}/stream")
    async def stream_run(request: Request, run_id: RunId) -> StreamingResponse:
        """Server-Sent Events: `run` (the run now), then `step` (a step's status changed) and
        `progress` events, and `end` (the final run) when it finishes."""
        run = await _call(request, "get_run", run_id)  # a 404 before the first byte
        return StreamingResponse(
            _events(request, run),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @api.get("/{pipeline_id}")
    async def get_pipeline(
        request: Request,
        pipeline_id: Annotated[str, Path(max_length=200)],
        version: Annotated[int | None, Query(ge=1, lt=2**63)] = None,  # a stored BIGINT
    ) -> dict:
        return await _call(request, "get_pipeline", pipeline_id, version)

    @api.post("/{pipeline_id}/runs", status_code=201)
    async def start_run(
        request: Request, pipeline_id: Annotated[str, Path(max_length=200)], body: RunCreate | None = None
    ) -> dict:
        return await _call(request, "start_run", pipeline_id, (body or RunCreate()).params)

    return api


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _events(request: Request, run: dict) -> AsyncIterator[bytes]:
    yield _sse("run", run)
    steps = {sid: step["status"] for sid, step in run["steps"].items()}
    progress = run["progress"]
    try:
        while run["status"] not in RUN_FINAL:
            if await request.is_disconnected():
                return
            version = run["version"]
            run = await _call(request, "wait_for_change", run["id"], version, STREAM_POLL_S)
            if run["version"] == version:
                yield b": keep-alive\n\n"
                continue
            for sid, step in run["steps"].items():
                if steps.get(sid) != step["status"]:
                    steps[sid] = step["status"]
                    yield _sse("step", {"run_id": run["id"], "step_id": sid, **step})
            if run["progress"] != progress:
                progress = run["progress"]
                yield _sse("progress", {"run_id": run["id"], "progress": progress, "eta_s": run["eta_s"], "status": run["status"]})
        yield _sse("end", run)
    except asyncio.CancelledError:
        raise
    except ControlError as exc:  # after the first byte: one error event, then close
        yield _sse("error", exc.body()["error"])
