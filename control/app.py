"""The control API: projects and their members, API keys (with their limits and budgets), users,
usage and the audit log.

Routes have no ``/api`` prefix; the stack mounts this app under ``/api`` (so its docs are at
``/api/docs``). Every route but ``GET /health`` needs ``Authorization: Bearer <API key or OIDC
token>`` and declares the permission it needs with :func:`control.permissions.authorize` (the one
role -> permission table is there). Lists show only the caller's projects; another project's
resource is a 404, a write the caller's role does not allow a 403. Every change appends a record
to the hash-chained audit log (:mod:`control.audit`) in the change's own transaction.
Errors use OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, rendered by one
handler from :mod:`control.errors`; the message ends with the request id, also sent back in the
``x-request-id`` header.

The database must be migrated first (:func:`control.db.migrate`); the engine is created when
the app starts and disposed when it stops.

Example::

    await migrate(url)
    app = create_app(database_url=url, usage=ChdbStore("/var/foundry/metrics"), auth=config.auth)
    uvicorn.run(app, port=8081)
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, Protocol, TypeVar

import httpx
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import select, text
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette._utils import get_route_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control import analytics, clusters_api, deployments_api, pipelines_api, predict_api, registry_api
from control import audit as audit_log
from control import keys, projects, users
from control.audit import Audit
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
from control.models import AuditRecord
from control.oidc import OidcVerifier
from control.permissions import Access, Caller, api_routes, authorize, project_not_found, route_permission
from control.schemas import (
    AuditPage,
    AuditRecordPublic,
    BenchmarkRow,
    ErrorResponse,
    Health,
    Me,
    MEMBER_LIMIT_FIELDS,
    MemberCreate,
    MemberPublic,
    MemberUpdate,
    KeyCreate,
    KeyCreated,
    KeyPublic,
    KeyUpdate,
    ProjectCreate,
    ProjectPublic,
    ProjectUpdate,
    Ref,
    UsagePublic,
    UserCreate,
    UserPublic,
    UserRef,
    UserUpdate,
    UTCDatetime,
)
from serve.metrics.records import UsageReport
from serve.metrics.store import MetricsBackendError
from serve.request_id import HEADER as REQUEST_ID, given_request_id

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
    rows: list[BenchmarkRow] = Field(max_length=10_000)


class Page(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]


OIDC_TIMEOUT_S = 10.0


def create_app(
    *,
    database_url: str,
    usage: UsageSource,
    auth: Any = None,
    pipelines: Any = None,
    home: str | None = None,
    static_models: Any = (),
    echo_request_id: bool = True,
) -> FastAPI:
    """The control API over the database at ``database_url`` and the metrics in ``usage``;
    ``auth`` (a :class:`control.config.AuthConfig`) also accepts the issuer's OIDC tokens.
    ``home`` (``FOUNDRY_HOME``) and ``static_models`` (the names the config file serves) are
    what deployments need: where models live, and names a deployment may not take.
    ``echo_request_id=False`` behind Ray Serve, whose ingress sends the ``x-request-id`` back
    itself (:mod:`serve.request_id`)."""
    parse_url(database_url, is_async=True)  # a bad URL fails now, not at the first request

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(database_url, serialize_writes=True)
        app.state.sessions = create_sessionmaker(engine)
        http = httpx.AsyncClient(timeout=OIDC_TIMEOUT_S) if auth is not None else None
        app.state.authenticator = users.Authenticator(OidcVerifier(auth, http=http) if http is not None else None)
        try:
            yield
        finally:
            if http is not None:
                await http.aclose()
            await engine.dispose()

    app = FastAPI(
        dependencies=[Depends(_known_query_parameters)],
        title="Foundry control API",
        summary="Projects, API keys and usage of a Foundry stack.",
        version="1",
        lifespan=lifespan,
    )
    app.state.usage = usage
    app.state.pipelines = pipelines  # a control.pipelines_api.PipelinesService, or None: 503 on /pipelines
    app.state.home = home
    app.state.static_models = set(static_models)
    app.state.authenticate = _authenticate
    app.state.echo_request_id = echo_request_id
    app.add_middleware(_RequestId, echo=echo_request_id)
    app.add_exception_handler(ControlError, _control_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
    app.include_router(_routes())
    # usage over time, of the caller's projects (analytics._project_id narrows it)
    app.include_router(analytics.router, dependencies=[authorize("usage:view")])
    # pipelines deploy and change the cluster, for every project: admins
    app.include_router(pipelines_api.router(), dependencies=[authorize("cluster:manage"), Depends(_audit_writes)])
    # optimizer predictions with the active predictor version: anyone who may view models
    app.include_router(predict_api.router, dependencies=[authorize("model:view")])
    # clusters (admins) and deployments (per project); each route says its permission, audited
    app.include_router(clusters_api.router(Session, _audit))
    app.include_router(deployments_api.router(Session, _audit))
    # the model registry: reads model:view, writes model:manage (each route says which), audited
    app.include_router(registry_api.router(Session, _audit))
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
            error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
            for route in api_routes(app):  # the permission each route checks, for readers and tests
                if (permission := route_permission(route)) is not None:
                    for method in route.methods:
                        operation = schema["paths"][route.path_format][method.lower()]
                        operation["x-permission"] = permission
                        responses = operation.setdefault("responses", {})
                        responses.setdefault("400", {"description": "Invalid request", **error})
                        responses.setdefault("401", {"description": "Missing or invalid credentials", **error})
                        responses.setdefault("403", {"description": f"Needs {permission}", **error})
        return app.openapi_schema

    app.openapi = openapi


def _query_parameter_names(dependant: Any) -> set[str] | None:
    """The query parameters a route declares, its dependencies' included; None if it takes a
    model of them (any name may be meant)."""
    names: set[str] = set()
    pending = [dependant]
    while pending:
        current = pending.pop()
        for field in current.query_params:
            if isinstance(field.field_info.annotation, type) and issubclass(field.field_info.annotation, BaseModel):
                return None
            names.add(field.alias)
        pending.extend(current.dependencies)
    return names


async def _known_query_parameters(request: Request) -> None:
    """Unknown query parameters are errors, as unknown body fields are (a typo is not ignored)."""
    if not request.query_params:
        return
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known = _query_parameter_names(dependant)
    if known is None:
        return
    for name in request.query_params:
        if name not in known:
            raise InvalidRequest(
                f"unknown query parameter {name[:64]!r}" + (f" (known: {', '.join(sorted(known))})" if known else ""),
                param=name[:64], code="unknown_field",
            )
        if len(request.query_params.getlist(name)) > 1:  # none takes a list: which one was meant?
            raise InvalidRequest(f"query parameter {name[:64]!r} given more than once", param=name[:64])


# --- database sessions and callers ------------------------------------------------------------


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


async def _authenticate(request: Request, token: str) -> Caller:
    # A session of its own, closed at once: no transaction stays open while the route runs.
    async with _database(request) as session:
        return await request.app.state.authenticator.caller(session, token, request_id=_request_id(request))


def _audit(access: Access) -> Audit:
    return Audit(actor=access.caller.actor, request_id=access.request_id)


async def _audit_writes(request: Request) -> AsyncIterator[None]:
    """For routers whose changes live outside the control database (pipelines: DBOS): one audit
    record per successful write, ``action`` = method and route, ``changes`` = the path's ids.
    A write that fails raises through the ``yield`` and is not recorded."""
    yield
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    route = request.scope.get("route")
    action = f"{request.method.lower()} {getattr(route, 'path_format', request.url.path)}"[:64]
    async with _database(request) as session:
        await audit_log.append(
            session, actor=request.state.caller.actor, action=action, target=request.url.path[:128],
            changes=dict(request.path_params), request_id=_request_id(request),
        )  # fmt: skip
        await session.commit()


# --- routes ----------------------------------------------------------------------------------


def _routes() -> APIRouter:
    router = APIRouter()
    api = APIRouter(
        responses={
            400: {"model": ErrorResponse, "description": "Invalid request; `param` names the field"},
            401: {"model": ErrorResponse, "description": "Missing, unknown, revoked or expired key or token"},
            403: {"model": ErrorResponse, "description": "The caller's role does not allow this"},
            404: {"model": ErrorResponse, "description": "Unknown, or in a project the caller is not in"},
            503: {"model": ErrorResponse, "description": "Database or metrics store unavailable"},
        },
    )
    conflict = {409: {"model": ErrorResponse, "description": "Conflicts with the current state"}}

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

    # --- users ---

    @api.get("/users/me", response_model=Me, tags=["users"])
    async def me(session: Session, access: Annotated[Access, authorize("authenticated")]) -> Me:
        """Who you are, your projects and roles, and every permission you hold."""
        caller = access.caller
        user = await session.get(users.User, caller.user_id) if caller.user_id else None
        return Me(
            id=user.id if user else None,
            sub=user.sub if user else None,
            email=user.email if user else None,
            is_admin=caller.is_admin,
            projects=await users.projects_of(session, caller, user),
            permissions=caller.permissions(),
        )

    @api.get("/users", response_model=Page[UserPublic], tags=["users"])
    async def list_users(session: Session, access: Annotated[Access, authorize("user:view")]) -> Page[UserPublic]:
        return Page(data=await users.list_users(session))

    @api.post("/users", response_model=UserPublic, status_code=201, tags=["users"], responses=conflict)
    async def create_user(
        body: UserCreate, session: Session, access: Annotated[Access, authorize("user:manage")]
    ) -> UserPublic:
        """A user created ahead by email; matched to its OIDC identity on first sign-in."""
        return await users.create_user(session, body, audit=_audit(access))

    @api.patch("/users/{user_id}", response_model=UserPublic, tags=["users"])
    async def update_user(
        user_id: Annotated[Ref, Path()], body: UserUpdate, session: Session,
        access: Annotated[Access, authorize("user:manage")],
    ) -> UserPublic:
        """Deactivate (`is_active: false`) or reactivate a user, or grant admin. A deactivated
        user, and its keys, get 403; gateways drop its keys within their refresh interval."""
        return await users.update_user(session, user_id, body, audit=_audit(access))

    # --- projects and members ---

    @api.get("/projects", response_model=Page[ProjectPublic], tags=["projects"])
    async def list_projects(session: Session, access: Annotated[Access, authorize("project:view")]) -> Page[ProjectPublic]:
        """The projects you are a member of (every project for an admin)."""
        return Page(data=await projects.list_projects(session, project_ids=access.projects()))

    @api.post("/projects", response_model=ProjectPublic, status_code=201, tags=["projects"], responses=conflict)
    async def create_project(
        body: ProjectCreate, session: Session, access: Annotated[Access, authorize("project:create")]
    ) -> ProjectPublic:
        """A new project (admins). Add its owner with `POST /projects/{name}/members`."""
        if access.projects() is not None:  # an admin's key bound to one project
            raise PermissionDenied("only admins may create projects", code="permission_denied")
        return await projects.create_project(session, body, audit=_audit(access))

    @api.patch("/projects/{name_or_id}", response_model=ProjectPublic, tags=["projects"])
    async def update_project(
        name_or_id: Annotated[Ref, Path(description="project name or id")], body: ProjectUpdate, session: Session,
        access: Annotated[Access, authorize("project:manage")],
    ) -> ProjectPublic:
        """Change the project's budget; only the fields sent change, `null` removes one. Gateways
        apply it within their key refresh interval."""
        project = await _project(session, access, name_or_id, param="name_or_id")
        return await projects.update_project(session, project, body, audit=_audit(access))

    @api.get("/projects/{name_or_id}/members", response_model=Page[MemberPublic], tags=["projects"])
    async def list_members(
        name_or_id: Annotated[Ref, Path(description="project name or id")], session: Session,
        access: Annotated[Access, authorize("project:view")],
    ) -> Page[MemberPublic]:
        project = await _project(session, access, name_or_id, param="name_or_id")
        return Page(data=await users.list_members(session, project))

    @api.post("/projects/{name_or_id}/members", response_model=MemberPublic, tags=["projects"],
              responses={201: {"model": MemberPublic, "description": "A new member"}})
    async def add_member(
        name_or_id: Annotated[Ref, Path(description="project name or id")], body: MemberCreate, session: Session,
        response: Response, access: Annotated[Access, authorize("project:manage")],
    ) -> MemberPublic:
        """Give a user (email or OIDC sub) a role in the project: 201 if new, 200 if the role
        changed or stayed. An unknown email is created ahead, matched on first sign-in."""
        project = await _project(session, access, name_or_id, param="name_or_id")
        limits = body.model_dump(include=body.model_fields_set & set(MEMBER_LIMIT_FIELDS))
        member, created = await users.set_member(
            session, project, body.user, users.Role(body.role), audit=_audit(access), limits=limits
        )
        response.status_code = 201 if created else 200
        return member

    @api.patch("/projects/{name_or_id}/members/{user}", response_model=MemberPublic, tags=["projects"])
    async def update_member(
        name_or_id: Annotated[Ref, Path(description="project name or id")],
        user: Annotated[UserRef, Path(description="the user's id, email or OIDC sub")],
        body: MemberUpdate, session: Session, access: Annotated[Access, authorize("project:manage")],
    ) -> MemberPublic:
        """Change a member's role or limits; only the fields sent change, `null` removes a limit.
        The limits (rpm, tpm, a token and/or USD budget) are shared by every key the member owns
        in the project, on top of each key's own; gateways apply them within seconds."""
        project = await _project(session, access, name_or_id, param="name_or_id")
        changes = body.model_dump(include=body.model_fields_set)
        return await users.update_member(session, project, user, changes, audit=_audit(access))

    @api.delete("/projects/{name_or_id}/members/{user}", status_code=204, tags=["projects"])
    async def remove_member(
        name_or_id: Annotated[Ref, Path(description="project name or id")],
        user: Annotated[UserRef, Path(description="the user's id, email or OIDC sub")],
        session: Session, access: Annotated[Access, authorize("project:manage")],
    ) -> Response:
        """Remove a member; its keys in the project stop working (gateways within seconds)."""
        project = await _project(session, access, name_or_id, param="name_or_id")
        await users.remove_member(session, project, user, audit=_audit(access))
        return Response(status_code=204)

    # --- keys ---

    @api.get("/keys", response_model=Page[KeyPublic], tags=["keys"])
    async def list_keys(
        session: Session, access: Annotated[Access, authorize("key:view")],
        project: Annotated[Ref | None, Query(description="project name or id")] = None,
    ) -> Page[KeyPublic]:
        """The keys of your projects (revoked ones too), showing only their prefix."""
        if project is not None:
            await _project(session, access, project)
        return Page(data=await keys.list_keys(session, project=project, project_ids=access.projects()))

    @api.post("/keys", response_model=KeyCreated, status_code=201, tags=["keys"])
    async def create_key(body: KeyCreate, session: Session, access: Annotated[Access, authorize("key:manage")]) -> KeyCreated:
        """A new key acting for you in the project (admins: created if missing). The response
        holds the secret (`key`): it is shown only this once."""
        if access.projects() is not None:  # only admins create projects along the way
            await _project(session, access, body.project)
        return await keys.create_key(session, body, owner_id=access.caller.user_id, audit=_audit(access))

    @api.patch("/keys/{key_id}", response_model=KeyPublic, tags=["keys"], responses=conflict)
    async def update_key(
        key_id: Annotated[Ref, Path()], body: KeyUpdate, session: Session,
        access: Annotated[Access, authorize("key:manage")],
    ) -> KeyPublic:
        """Change a key's name, models, limits or budget; only the fields sent change, `null`
        removes a limit. A revoked key cannot change (409). Gateways apply it within their key
        refresh interval."""
        await _key(session, access, key_id)
        return await keys.update_key(session, key_id, body, audit=_audit(access))

    @api.post("/keys/{key_id}/regenerate", response_model=KeyCreated, tags=["keys"], responses=conflict)
    async def regenerate_key(
        key_id: Annotated[Ref, Path()], session: Session, access: Annotated[Access, authorize("key:manage")]
    ) -> KeyCreated:
        """A new secret for the key (`key`, shown only this once); the old one stops working
        within the gateways' refresh interval. The id, limits and budget stay, and so does what
        the key has spent this period. A revoked key cannot be regenerated (409)."""
        await _key(session, access, key_id)
        return await keys.regenerate_key(session, key_id, audit=_audit(access))

    @api.delete("/keys/{key_id}", response_model=KeyPublic, tags=["keys"])
    async def revoke_key(
        key_id: Annotated[Ref, Path()], session: Session, access: Annotated[Access, authorize("key:manage")]
    ) -> KeyPublic:
        """Revoke a key; gateways stop accepting it within their refresh interval."""
        await _key(session, access, key_id)
        return await keys.revoke_key(session, key_id, audit=_audit(access))

    # --- usage, benchmarks, audit ---

    @api.get("/usage", response_model=UsagePublic, tags=["usage"])
    async def usage(
        request: Request,
        session: Session,
        access: Annotated[Access, authorize("usage:view")],
        since: Annotated[UTCDatetime | None, Query(description="ISO 8601, inclusive; naive is UTC")] = None,
        until: Annotated[UTCDatetime | None, Query(description="ISO 8601, exclusive; naive is UTC")] = None,
        project: Annotated[Ref | None, Query(description="project name or id; needed if you are in several")] = None,
    ) -> UsagePublic:
        """Requests, errors, tokens and per-model latency and TTFT percentiles."""
        if since is not None and until is not None and since >= until:
            raise InvalidRequest("until must be later than since", param="until")
        project_id = None
        if project is not None:
            project_id = (await _project(session, access, project)).id
        elif (mine := access.projects()) is not None:
            if len(mine) != 1:
                raise InvalidRequest("name the project: you are a member of several (or none)", param="project",
                                     code="missing_field")
            project_id = next(iter(mine))
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

    @api.post("/benchmarks", status_code=201, tags=["benchmarks"])
    async def record_benchmarks(
        request: Request, body: BenchmarkRows, session: Session, access: Annotated[Access, authorize("model:manage")]
    ) -> dict[str, int]:
        """Store `foundry bench` rows (the measured-data schema) in the metrics store."""
        try:
            rows = [row.model_dump() for row in body.rows]
            inserted = await asyncio.wait_for(request.app.state.usage.insert_benchmarks(rows), USAGE_TIMEOUT_S)
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="rows") from None
        except (TimeoutError, MetricsBackendError) as exc:
            raise MetricsUnavailable("the metrics store is unavailable; try again shortly") from exc
        await _audit(access).append(session, "benchmarks.record", "benchmarks", changes={"rows": inserted})
        await session.commit()
        return {"inserted": inserted}

    @api.get("/benchmarks", tags=["benchmarks"])
    async def list_benchmarks(
        request: Request, access: Annotated[Access, authorize("model:view")],
        model_path: Annotated[str | None, Query(description="only this model")] = None,
    ) -> dict:
        """Stored benchmark rows, oldest first; `foundry tune train` reads the same columns."""
        try:
            rows = await asyncio.wait_for(request.app.state.usage.benchmarks(model_path=model_path), USAGE_TIMEOUT_S)
        except (TimeoutError, MetricsBackendError) as exc:
            raise MetricsUnavailable("the metrics store is unavailable; try again shortly") from exc
        return {"object": "list", "data": rows}

    @api.get("/audit", response_model=AuditPage, tags=["audit"])
    async def list_audit(
        session: Session,
        access: Annotated[Access, authorize("audit:view")],
        actor: Annotated[str | None, Query(max_length=64, description="e.g. user:usr_... or key:key_...")] = None,
        action: Annotated[str | None, Query(max_length=64, description="e.g. key.create")] = None,
        target: Annotated[str | None, Query(max_length=128, description="e.g. key:key_...")] = None,
        project: Annotated[Ref | None, Query(description="project name or id")] = None,
        since: Annotated[UTCDatetime | None, Query(description="ISO 8601, inclusive")] = None,
        until: Annotated[UTCDatetime | None, Query(description="ISO 8601, exclusive")] = None,
        after: Annotated[int, Query(ge=0, le=2**62, description="records after this seq (paging)")] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> AuditPage:
        """The audit log, oldest first, with the chain's head (admins)."""
        query = select(AuditRecord).where(AuditRecord.seq > after).order_by(AuditRecord.seq).limit(limit + 1)
        for column, value in ((AuditRecord.actor, actor), (AuditRecord.action, action), (AuditRecord.target, target)):
            if value is not None:
                query = query.where(column == value)
        if project is not None:
            query = query.where(AuditRecord.project_id == (await _project(session, access, project)).id)
        if since is not None:
            query = query.where(AuditRecord.at >= since)
        if until is not None:
            query = query.where(AuditRecord.at < until)
        rows = list(await session.scalars(query))
        return AuditPage(
            data=[AuditRecordPublic.model_validate(r) for r in rows[:limit]],
            has_more=len(rows) > limit,
            chain=await audit_log.head(session),
        )

    router.include_router(api)
    return router


async def _project(session: AsyncSession, access: Access, ref: str, *, param: str = "project") -> projects.Project:
    """The project ``ref`` if the caller holds the route's permission there (404 / 403 if not)."""
    missing = project_not_found(ref)
    try:
        project = await projects.find_project(session, ref, param=param)
    except NotFound:
        raise missing() from None
    access.check(project.id, missing)
    return project


async def _key(session: AsyncSession, access: Access, key_id: str) -> keys.ApiKey:
    """The key ``key_id`` if the caller may manage it (404 in another project, 403 by role)."""
    key = await keys.get_key(session, key_id)
    access.check(key.project_id, lambda: keys.key_not_found(key_id))
    access.check_key_owner(key.project_id, key.owner_id)
    return key


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
        allowed = _allowed_methods(request)
        error = InvalidRequest(
            f"method {request.method} is not allowed on {request.url.path} (allowed: {', '.join(allowed)})",
            code="method_not_allowed",
        )
        return JSONResponse(error.body(_request_id(request)), status_code=405, headers={"Allow": ", ".join(allowed)})
    else:
        error = _HTTP_ERRORS.get(exc.status_code, InvalidRequest)(str(exc.detail), code=f"http_{exc.status_code}")
    status = exc.status_code if exc.status_code < 500 else 500
    return JSONResponse(error.body(_request_id(request)), status_code=status, headers=exc.headers)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves on this path (Starlette's 405 names only the first route's)."""
    methods: set[str] = set()
    for route in api_routes(request.app):
        if route.path_regex.match(get_route_path(request.scope)):
            methods |= route.methods
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # Sent by Starlette's outermost middleware, outside _RequestId: set the header here. Starlette
    # re-raises after this response, so the server still logs the traceback.
    request_id = _request_id(request)
    headers = {"x-request-id": request_id} if request_id and request.app.state.echo_request_id else None
    return JSONResponse(ControlError("internal server error").body(request_id), status_code=500, headers=headers)


class _RequestId:
    """Gives every request an id (the client's ``x-request-id`` if sane, :mod:`serve.request_id`)
    and, with ``echo``, sends it back."""

    def __init__(self, app: ASGIApp, *, echo: bool = True) -> None:
        self.app = app
        self.echo = echo

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = given_request_id(dict(scope["headers"]).get(REQUEST_ID))
        request_id = given or f"req_{uuid.uuid4().hex[:16]}"
        scope.setdefault("state", {})["request_id"] = request_id
        if not self.echo:
            await self.app(scope, receive, send)
            return

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        await self.app(scope, receive, send_with_id)
