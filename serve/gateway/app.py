"""The OpenAI-compatible HTTP surface, and the Ray Serve deployment that hosts it.

Mounted by Ray Serve under ``/v1``, so the routes here are ``/chat/completions``, ... .

Example::

    app = build_gateway(models=cfg.models, runtimes=..., key_source=..., metrics=...,
                        settings=cfg.gateway, metrics_settings=cfg.metrics,
                        route_source=...)      # optional: models registered at run time
    serve.run(app, name="gateway", route_prefix="/v1")
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from functools import partial
from pathlib import Path

import ray
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send
from ray.serve.deployment import Application

from serve.auth import KeySource
from serve.config import GatewayConfig, LimitsConfig, MetricsConfig, ModelConfig
from serve.gateway.breaker import CircuitBreaker
from serve.gateway.errors import PayloadTooLarge, error_body
from serve.gateway.keycache import KeyCache
from serve.gateway.openapi import describe
from serve.gateway.ratelimit import build_limiter
from serve.gateway.routesource import RouteSource
from serve.gateway.routetable import RouteTable
from serve.gateway.routing import ModelRoute, Router, Slot
from serve.gateway.service import GatewayService, Reply
from serve.gateway.telemetry import Telemetry
from serve.metrics.actor import MetricsClient, MetricsRecorder
from serve.providers import build_provider
from serve.request_id import HEADER as REQUEST_ID, given_request_id

JSON = "application/json"

# Ray Serve runs a replica's user code on an event loop of its own, in a second thread, unless
# told otherwise: every request, and every chunk of a stream, then crosses between that loop
# and the loop of the replica's HTTP server. The gateway never blocks its loop (CPU work goes to
# threads), so it runs on the server's loop: no hop, no second thread contending for the GIL.
# Ray reads the switch when the replica's process starts, hence an environment variable.
REPLICA_ENV = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}


def create_app(
    *,
    models: dict[str, ModelConfig],
    runtime_deployments: dict[str, str],
    key_source: KeySource,
    metrics: MetricsClient,
    settings: GatewayConfig,
    metrics_settings: MetricsConfig,
    limits: LimitsConfig = LimitsConfig(),
    route_source: RouteSource | None = None,
    metrics_spool: Path | None = None,
    echo_request_id: bool = True,
) -> FastAPI:
    """The gateway's FastAPI app. ``runtime_deployments`` maps runtime name → Serve deployment
    name; resources (handles, key cache, recorder) are created in the lifespan, in the replica.
    ``route_source`` adds models registered at run time to the ``models`` of the file.
    ``metrics_spool``: a local directory where metrics rows wait until stored, so a replica that
    is killed loses none (:mod:`serve.metrics.spool`). ``echo_request_id=False`` behind Ray Serve,
    whose ingress sends the ``x-request-id`` back itself (:mod:`serve.request_id`)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        routes = RouteTable(
            Router({}),
            static=build_routes(models, runtime_deployments, settings),
            source=route_source,
            build=partial(build_route, settings=settings),
            refresh_s=settings.routes_refresh_s,
        )
        await routes.start()
        keys = KeyCache(key_source, refresh_s=settings.key_refresh_s)
        await keys.start()
        recorder = MetricsRecorder(
            metrics,
            interval_s=metrics_settings.flush_interval_ms / 1000,
            max_rows=metrics_settings.flush_max_rows,
            spool_dir=metrics_spool,
        )
        limiter = build_limiter(limits)
        await limiter.start()
        service = GatewayService(
            routes=routes, keys=keys, limiter=limiter, recorder=recorder,
            telemetry=Telemetry(cluster=ray.is_initialized()), echo_request_id=echo_request_id,
        )  # fmt: skip
        app.state.gateway = service
        try:
            yield
        finally:
            await service.drain()
            await limiter.close()
            await recorder.close()  # nothing recorded is lost on shutdown
            await keys.close()
            await routes.close()

    app = FastAPI(
        title="Foundry gateway",
        summary="The OpenAI API in front of this stack's runtimes and outside providers.",
        version="1",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )

    def openapi() -> dict:
        if app.openapi_schema is None:
            # an enum of the model names only when they are fixed; registered ones come and go
            app.openapi_schema = describe(app, list(models) if route_source is None else [])
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # unknown paths and methods get the OpenAI error shape too; a 405 keeps its Allow header
        where = f"{request.method} {request.url.path}"
        if exc.status_code == 404:
            message, code = f"Invalid URL ({where}).", "unknown_url"
        elif exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            message, code = f"Method not allowed ({where}); this URL takes {allowed}.", "method_not_allowed"
        else:
            message, code = str(exc.detail), None
        body = error_body(message, "invalid_request_error", None, code)
        return Response(body, status_code=exc.status_code, media_type=JSON, headers=exc.headers)

    limit = settings.max_body_bytes
    # The generation routes are served by HotRoutes before FastAPI routes anything; the routes
    # below describe them in /openapi.json and serve them the same way if it is left out.
    app.add_middleware(HotRoutes, limit=limit)

    async def with_body(request: Request, endpoint: str, handle) -> Response:
        svc: GatewayService = request.app.state.gateway
        auth = request.headers.get("authorization")
        rid = given_request_id(request.headers.get("x-request-id", "").encode("latin-1") or None)
        try:
            raw = await read_body(request, limit)
        except PayloadTooLarge as err:
            reply = await svc.refuse(endpoint, auth, err, rid)
        except _ClientGone:  # nobody to answer
            return Response(status_code=499)
        else:
            reply = await handle(svc, auth, raw, rid)
        return _respond(reply)

    @app.post("/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await with_body(request, "chat.completions", GatewayService.chat_completions)

    @app.post("/completions")
    async def completions(request: Request) -> Response:
        return await with_body(request, "completions", GatewayService.completions)

    @app.post("/embeddings")
    async def embeddings(request: Request) -> Response:
        return await with_body(request, "embeddings", GatewayService.embeddings)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus(request: Request) -> Response:
        svc: GatewayService = request.app.state.gateway
        return _respond(await svc.metrics())

    @app.get("/models")
    async def list_models(request: Request) -> Response:
        svc: GatewayService = request.app.state.gateway
        return _respond(await svc.models(request.headers.get("authorization")))

    return app


_Handler = Callable[[GatewayService, str | None, bytes, str | None], Awaitable[Reply]]
HOT_ROUTES: dict[str, tuple[str, _Handler]] = {
    "/chat/completions": ("chat.completions", GatewayService.chat_completions),
    "/completions": ("completions", GatewayService.completions),
    "/embeddings": ("embeddings", GatewayService.embeddings),
}


class HotRoutes:
    """ASGI middleware: ``POST`` to a generation route goes straight to the service, past
    FastAPI's routing, its request and response objects and Starlette's task group per stream
    (on the 2-core box that machinery was about a tenth of the replica's CPU per request).
    Same bytes out as the FastAPI routes: status, headers (``content-length`` or, for streams,
    ``cache-control: no-cache`` and ``text/event-stream; charset=utf-8``) and body; a client
    that disconnects mid-stream cancels it. Everything else goes on to FastAPI. The request's
    ``x-request-id`` is its id (:mod:`serve.request_id`)."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            hot = HOT_ROUTES.get(_route_path(scope))
            if hot is not None:
                await self._serve(hot, scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _serve(self, hot: tuple[str, _Handler], scope: Scope, receive: Receive, send: Send) -> None:
        endpoint, handle = hot
        svc: GatewayService = scope["app"].state.gateway
        auth = declared = given = None
        for name, value in scope["headers"]:
            if name == b"authorization" and auth is None:
                auth = value.decode("latin-1")
            elif name == b"content-length" and declared is None:
                declared = value.decode("latin-1")
            elif name == REQUEST_ID and given is None:
                given = value
        rid = given_request_id(given)
        try:
            raw = await _receive_body(receive, declared, self.limit)
        except PayloadTooLarge as err:
            reply = await svc.refuse(endpoint, auth, err, rid)
        except _ClientGone:
            return
        else:
            reply = await handle(svc, auth, raw, rid)
        if reply.stream is None:
            media_type = reply.headers.pop("content-type", JSON)
            headers = _raw_headers(reply.headers)
            headers += [(b"content-length", b"%d" % len(reply.body or b"")), (b"content-type", media_type.encode("latin-1"))]
            await send({"type": "http.response.start", "status": reply.status, "headers": headers})
            await send({"type": "http.response.body", "body": reply.body or b""})
            return
        headers = _raw_headers({**reply.headers, "cache-control": "no-cache"})
        headers.append((b"content-type", b"text/event-stream; charset=utf-8"))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await _stream_body(reply.stream, receive, send)


class _ClientGone(Exception):
    """The client disconnected before its request body was read."""


def _route_path(scope: Scope) -> str:
    """The path below the app's mount point (Serve mounts the gateway at ``/v1``)."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root + "/") else path


async def _receive_body(receive: Receive, declared: str | None, limit: int) -> bytes:
    """The request body, refused with :class:`PayloadTooLarge` as soon as it is known to be
    over ``limit`` bytes: from ``Content-Length`` (``declared``) before reading, else while
    reading; :class:`_ClientGone` if the client leaves first."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(limit, int(declared))
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _raw_headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


STREAM_BUFFER_BYTES = 64 * 1024


async def _stream_body(stream: AsyncIterator[bytes], receive: Receive, send: Send) -> None:
    """Send ``stream``'s chunks, those that come together in one write.

    A task reads the stream into a list; this coroutine sends whatever the list holds each time
    it wakes. The reader runs until it waits on the upstream, so the chunks of one upstream read
    (often a whole short answer) leave as one ASGI message and one socket write instead of one
    each (~20 per answer, about a sixth of the replica's CPU per streamed request). A client that
    reads slowly holds the reader back once ``STREAM_BUFFER_BYTES`` wait. A disconnect cancels
    the stream (its ``finally`` records the request as 499 and closes the upstream) and ends the
    response; a failure of the stream itself is raised, the server's error."""
    chunks: list[bytes] = []
    waiting = 0
    wake, room = asyncio.Event(), asyncio.Event()
    room.set()
    gone = False

    async def read() -> None:
        nonlocal waiting
        try:
            async for chunk in stream:
                chunks.append(chunk)
                waiting += len(chunk)
                wake.set()
                if waiting >= STREAM_BUFFER_BYTES:
                    room.clear()
                    await room.wait()
        finally:
            wake.set()

    async def watch() -> None:
        nonlocal gone
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        finally:  # disconnected, or a receive that failed: the client is gone either way
            gone = True
            wake.set()

    reading = asyncio.ensure_future(read())
    watching = asyncio.ensure_future(watch())
    try:
        while True:
            await wake.wait()
            wake.clear()
            if gone:
                return
            while chunks:  # a send that waits for the socket lets the reader add more
                body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                waiting = 0
                room.set()
                # the stream ended well: its last bytes and the end of the body in one write
                last = reading.done() and not reading.cancelled() and reading.exception() is None
                await send({"type": "http.response.body", "body": body, "more_body": not last})
                if last:
                    return
            if reading.done():
                reading.result()
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
    finally:
        for task in (watching, reading):  # the client left: the stream goes; it ended: the watch goes
            if not task.done():
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
        for task in (watching, reading):
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: a client gone first makes a failure moot


def build_gateway(*, settings: GatewayConfig, **app_args) -> Application:
    """The gateway as a Serve application; ``app_args`` are :func:`create_app`'s other arguments."""

    # A builder, evaluated in the replica: the FastAPI app is created there, not pickled.
    def app() -> FastAPI:
        return create_app(settings=settings, echo_request_id=False, **app_args)

    @serve.deployment(
        name="Gateway",
        num_replicas=settings.replicas,
        ray_actor_options={"num_cpus": settings.num_cpus, "runtime_env": {"env_vars": REPLICA_ENV}},
        max_ongoing_requests=settings.max_ongoing_requests,
        # Serve's access log line per request duplicates the gateway's own metrics row (and
        # cost a formatted, flushed log write each); errors are still logged.
        logging_config={"enable_access_log": False},
        graceful_shutdown_wait_loop_s=0.5,
        graceful_shutdown_timeout_s=60,
    )
    @serve.ingress(app)
    class Gateway:
        pass

    return Gateway.bind()


def build_routes(
    models: dict[str, ModelConfig], runtime_deployments: dict[str, str], settings: GatewayConfig
) -> dict[str, ModelRoute]:
    """Providers (one pooled client each), weights and breakers for every configured model."""
    return {name: build_route(name, model, runtime_deployments, settings=settings) for name, model in models.items()}


def build_route(
    model_name: str, model: ModelConfig, runtime_deployments: dict[str, str], *, settings: GatewayConfig
) -> ModelRoute:
    """One model's route: a provider (one pooled client) per providers table, weights, breakers."""
    slots = {
        pname: Slot(
            model=model_name,
            provider=build_provider(model_name, pname, p, runtime_deployments),
            weight=p.weight,
            breaker=CircuitBreaker(failure_threshold=settings.breaker_failures, cooldown_s=settings.breaker_cooldown_s),
            pricing=model.pricing,
        )
        for pname, p in model.providers.items()
    }
    ranks = [[slots[name] for name in rank] for rank in model.ranks()]
    return ModelRoute(name=model_name, ranks=ranks, config=model)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, by :func:`_receive_body`'s rules."""
    return await _receive_body(request.receive, request.headers.get("content-length"), limit)


def _respond(reply: Reply) -> Response:
    if reply.stream is not None:
        return StreamingResponse(
            reply.stream, status_code=reply.status, media_type="text/event-stream",
            headers={**reply.headers, "cache-control": "no-cache"},
        )  # fmt: skip
    media_type = reply.headers.pop("content-type", JSON)
    return Response(reply.body, status_code=reply.status, media_type=media_type, headers=reply.headers)
