"""The control API: projects, API keys (with their limits and budgets) and usage, for admins.

Routes have no ``/api`` prefix; the stack mounts this app under ``/api`` (so its docs are at
``/api/docs``). Every route but ``GET /health`` needs ``Authorization: Bearer <admin key>``.
Errors use OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, rendered by one
handler from :mod:`control.errors`; the message ends with the request id, also sent back in the
``x-request-id`` header.

The database must be migrated first (:func:`control.db.migrate`); the engine is created when
the app starts and disposed when it stops.

Example::

    await migrate(url)
    app = create_app(database_url=url, usage=ChdbStore("/var/foundry/metrics"))
    uvicorn.run(app, port=8081)
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, Protocol, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control import analytics, keys, projects
from control.db import create_engine, create_sessionmaker, parse_url
from control.errors import (
    AuthenticationFailed,
    ControlError,
    DatabaseUnavailable,
    InvalidRequest,
    MetricsUnavailable,
    NotFound,
    PermissionDenied,
)
from control.schemas import (
    ErrorResponse,
    Health,
    KeyCreate,
    KeyCreated,
    KeyPublic,
    KeyUpdate,
    ProjectCreate,
    ProjectPublic,
    ProjectUpdate,
    Ref,
    UsagePublic,
    UTCDatetime,
)
from serve.metrics.records import UsageReport
from serve.metrics.store import MetricsBackendError

HEALTH_TIMEOUT_S = 5.0
USAGE_TIMEOUT_S = 30.0

T = TypeVar("T")


class UsageSource(Protocol):
    """Where ``GET /usage`` reads from, e.g. :class:`serve.metrics.store.ChdbStore`."""

    async def usage(
        self, *, since: datetime | None, until: datetime | None, project_id: str | None
    ) -> UsageReport: ...

    async def insert_benchmarks(self, rows: list[dict]) -> int: ...

    async def benchmarks(self, *, model_path: str | None = None) -> list[dict]: ...


class BenchmarkRows(BaseModel):
    rows: list[dict[str, Any]] = Field(max_length=10_000)


class Page(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]


def create_app(*, database_url: str, usage: UsageSource) -> FastAPI:
    """The control API over the database at ``database_url`` and the metrics in ``usage``."""
    parse_url(database_url, is_async=True)  # a bad URL fails now, not at the first request

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(database_url, serialize_writes=True)
        app.state.sessions = create_sessionmaker(engine)
        try:
            yield
        finally:
            await engine.dispose()

    app = FastAPI(
        title="Foundry control API",
        summary="Projects, API keys and usage of a Foundry stack.",
        version="1",
        lifespan=lifespan,
    )
    app.state.usage = usage
    app.add_middleware(_RequestId)
    app.add_exception_handler(ControlError, _control_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
    app.include_router(_routes())
    # usage over time; admin-only until the identity issue scopes it by project role
    app.include_router(analytics.router, dependencies=[Depends(_require_admin)])
    _document_errors(app)
    return app


def _document_errors(app: FastAPI) -> None:
    """Bad input is a 400 in the error shape here, never FastAPI's 422: say so in the docs."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = build()
            for operations in schema["paths"].values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
            for unused in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(unused, None)
        return app.openapi_schema

    app.openapi = openapi


# --- database sessions and admin authentication --------------------------------------------


@asynccontextmanager
async def _database(request: Request) -> AsyncIterator[AsyncSession]:
    try:
        async with request.app.state.sessions() as session:
            yield session
    except (OperationalError, InterfaceError, PoolTimeout) as exc:
        raise DatabaseUnavailable("the control database is unavailable; try again shortly") from exc


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    async with _database(request) as session:
        yield session


Session = Annotated[AsyncSession, Depends(_session, scope="function")]
_bearer = HTTPBearer(auto_error=False, description="an admin API key")


async def _require_admin(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    if credentials is None:
        raise AuthenticationFailed(
            "missing API key: send the header 'Authorization: Bearer <admin key>'", code="missing_api_key"
        )
    # A session of its own, closed at once: no transaction stays open while the route runs.
    async with _database(request) as session:
        key = await keys.authenticate(session, credentials.credentials)
    if not key.is_admin:
        raise PermissionDenied("this endpoint needs an admin API key")


# --- routes ----------------------------------------------------------------------------------


def _routes() -> APIRouter:
    router = APIRouter()
    admin = APIRouter(
        dependencies=[Depends(_require_admin)],
        responses={
            400: {"model": ErrorResponse, "description": "Invalid request; `param` names the field"},
            401: {"model": ErrorResponse, "description": "Missing, unknown, revoked or expired key"},
            403: {"model": ErrorResponse, "description": "Not an admin key"},
            404: {"model": ErrorResponse, "description": "Unknown project or key"},
            503: {"model": ErrorResponse, "description": "Database or metrics store unavailable"},
        },
    )

    @router.get(
        "/health",
        response_model=Health,
        tags=["health"],
        responses={503: {"model": ErrorResponse, "description": "Database unavailable"}},
    )
    async def health(request: Request) -> Health:
        """Whether the API is up and its database answers. No key needed."""
        try:
            async with _database(request) as session:
                await asyncio.wait_for(session.execute(text("SELECT 1")), HEALTH_TIMEOUT_S)
        except TimeoutError as exc:
            raise DatabaseUnavailable("the control database did not answer in time") from exc
        return Health(status="ok", database="ok")

    @admin.get("/projects", response_model=Page[ProjectPublic], tags=["projects"])
    async def list_projects(session: Session) -> Page[ProjectPublic]:
        return Page(data=await projects.list_projects(session))

    @admin.post(
        "/projects",
        response_model=ProjectPublic,
        status_code=201,
        tags=["projects"],
        responses={409: {"model": ErrorResponse, "description": "Name taken"}},
    )
    async def create_project(body: ProjectCreate, session: Session) -> ProjectPublic:
        return await projects.create_project(session, body)

    @admin.patch("/projects/{name_or_id}", response_model=ProjectPublic, tags=["projects"])
    async def update_project(
        name_or_id: Annotated[Ref, Path(description="project name or id")], body: ProjectUpdate, session: Session
    ) -> ProjectPublic:
        """Change the project's budget; only the fields sent change, `null` removes one. Gateways
        apply it within their key refresh interval."""
        return await projects.update_project(session, name_or_id, body)

    @admin.get("/keys", response_model=Page[KeyPublic], tags=["keys"])
    async def list_keys(
        session: Session, project: Annotated[Ref | None, Query(description="project name or id")] = None
    ) -> Page[KeyPublic]:
        """Every key (revoked ones too), showing only its prefix."""
        return Page(data=await keys.list_keys(session, project=project))

    @admin.post("/keys", response_model=KeyCreated, status_code=201, tags=["keys"])
    async def create_key(body: KeyCreate, session: Session) -> KeyCreated:
        """A new key. The response holds the secret (`key`): it is shown only this once."""
        return await keys.create_key(session, body)

    @admin.patch("/keys/{key_id}", response_model=KeyPublic, tags=["keys"])
    async def update_key(key_id: Annotated[Ref, Path()], body: KeyUpdate, session: Session) -> KeyPublic:
        """Change a key's name, models, limits or budget; only the fields sent change, `null`
        removes a limit. Gateways apply it within their key refresh interval."""
        return await keys.update_key(session, key_id, body)

    @admin.delete("/keys/{key_id}", response_model=KeyPublic, tags=["keys"])
    async def revoke_key(key_id: Annotated[Ref, Path()], session: Session) -> KeyPublic:
        """Revoke a key; gateways stop accepting it within their refresh interval."""
        return await keys.revoke_key(session, key_id)

    @admin.get("/usage", response_model=UsagePublic, tags=["usage"])
    async def usage(
        request: Request,
        session: Session,
        since: Annotated[UTCDatetime | None, Query(description="ISO 8601, inclusive; naive is UTC")] = None,
        until: Annotated[UTCDatetime | None, Query(description="ISO 8601, exclusive; naive is UTC")] = None,
        project: Annotated[Ref | None, Query(description="project name or id")] = None,
    ) -> UsagePublic:
        """Requests, errors, tokens and per-model latency and TTFT percentiles."""
        if since is not None and until is not None and since >= until:
            raise InvalidRequest("until must be later than since", param="until")
        project_id = None
        if project is not None:
            project_id = (await projects.find_project(session, project)).id
        await session.close()  # nothing more to read; don't hold a connection during the query
        source: UsageSource = request.app.state.usage
        try:
            report = await asyncio.wait_for(
                source.usage(since=since, until=until, project_id=project_id), USAGE_TIMEOUT_S
            )
        except TimeoutError as exc:
            raise MetricsUnavailable(f"the metrics store did not answer within {USAGE_TIMEOUT_S:g}s") from exc
        except MetricsBackendError as exc:
            raise MetricsUnavailable("the metrics store is unavailable; try again shortly") from exc
        return UsagePublic.of(report)

    @admin.post("/benchmarks", status_code=201, tags=["benchmarks"])
    async def record_benchmarks(request: Request, body: BenchmarkRows) -> dict[str, int]:
        """Store `foundry bench` rows (the measured-data schema) in the metrics store."""
        try:
            inserted = await asyncio.wait_for(request.app.state.usage.insert_benchmarks(body.rows), USAGE_TIMEOUT_S)
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="rows") from None
        except (TimeoutError, MetricsBackendError) as exc:
            raise MetricsUnavailable("the metrics store is unavailable; try again shortly") from exc
        return {"inserted": inserted}

    @admin.get("/benchmarks", tags=["benchmarks"])
    async def list_benchmarks(
        request: Request, model_path: Annotated[str | None, Query(description="only this model")] = None
    ) -> dict:
        """Stored benchmark rows, oldest first; `foundry tune train` reads the same columns."""
        try:
            rows = await asyncio.wait_for(request.app.state.usage.benchmarks(model_path=model_path), USAGE_TIMEOUT_S)
        except (TimeoutError, MetricsBackendError) as exc:
            raise MetricsUnavailable("the metrics store is unavailable; try again shortly") from exc
        return {"object": "list", "data": rows}

    router.include_router(admin)
    return router


# --- errors ----------------------------------------------------------------------------------


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


async def _control_error(request: Request, exc: ControlError) -> JSONResponse:
    return JSONResponse(exc.body(_request_id(request)), status_code=exc.status)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return await _control_error(request, _invalid_request(exc.errors()))


def _invalid_request(errors) -> InvalidRequest:
    first = errors[0]
    if first["type"] == "json_invalid":
        return InvalidRequest("the request body is not valid JSON", code="invalid_json")
    messages, params = [], []
    for error in errors[:3]:
        param = ".".join(str(p) for p in error["loc"] if p not in ("body", "query", "path", "header")) or None
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "missing" and param is None:
            message = "a JSON request body is required"
        messages.append(f"{param}: {message}" if param else message)
        params.append(param)
    code = {"missing": "missing_field", "extra_forbidden": "unknown_field"}.get(first["type"], "invalid_value")
    return InvalidRequest("; ".join(messages), param=params[0], code=code)


_HTTP_ERRORS = {
    404: NotFound,
    401: AuthenticationFailed,
    403: PermissionDenied,
}


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 404:
        error: ControlError = NotFound(f"no route {request.method} {request.url.path}", code="unknown_route")
    elif exc.status_code == 405:
        error = InvalidRequest(f"method {request.method} is not allowed on {request.url.path}", code="method_not_allowed")
    else:
        error = _HTTP_ERRORS.get(exc.status_code, InvalidRequest)(str(exc.detail), code=f"http_{exc.status_code}")
    status = exc.status_code if exc.status_code < 500 else 500
    return JSONResponse(error.body(_request_id(request)), status_code=status, headers=exc.headers)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # Sent by Starlette's outermost middleware, outside _RequestId: set the header here. Starlette
    # re-raises after this response, so the server still logs the traceback.
    request_id = _request_id(request)
    headers = {"x-request-id": request_id} if request_id else None
    return JSONResponse(ControlError("internal server error").body(request_id), status_code=500, headers=headers)


_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class _RequestId:
    """Gives every request an id (the client's ``x-request-id`` if sane) and echoes it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _CLIENT_REQUEST_ID.match(given) else f"req_{uuid.uuid4().hex[:16]}"
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        await self.app(scope, receive, send_with_id)
