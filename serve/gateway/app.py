"""The OpenAI-compatible HTTP surface, and the Ray Serve deployment that hosts it.

Mounted by Ray Serve under ``/v1``, so the routes here are ``/chat/completions``, ... .

Example::

    app = build_gateway(models=cfg.models, runtimes=..., key_source=..., metrics=...,
                        settings=cfg.gateway, metrics_settings=cfg.metrics,
                        route_source=...)      # optional: models registered at run time
    serve.run(app, name="gateway", route_prefix="/v1")
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import ray
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException
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

JSON = "application/json"


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
) -> FastAPI:
    """The gateway's FastAPI app. ``runtime_deployments`` maps runtime name → Serve deployment
    name; resources (handles, key cache, recorder) are created in the lifespan, in the replica.
    ``route_source`` adds models registered at run time to the ``models`` of the file.
    ``metrics_spool``: a local directory where metrics rows wait until stored, so a replica that
    is killed loses none (:mod:`serve.metrics.spool`)."""

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
            routes=routes, keys=keys, limiter=limiter, recorder=recorder, telemetry=Telemetry(cluster=ray.is_initialized())
        )
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
        # unknown paths and methods get the OpenAI error shape too
        body = error_body(str(exc.detail), "invalid_request_error", None, None)
        return Response(body, status_code=exc.status_code, media_type=JSON)

    limit = settings.max_body_bytes

    async def with_body(request: Request, endpoint: str, handle) -> Response:
        svc: GatewayService = request.app.state.gateway
        auth = request.headers.get("authorization")
        try:
            raw = await read_body(request, limit)
        except PayloadTooLarge as err:
            return _respond(await svc.refuse(endpoint, auth, err))
        return _respond(await handle(svc, auth, raw))

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


def build_gateway(*, settings: GatewayConfig, **app_args) -> Application:
    """The gateway as a Serve application; ``app_args`` are :func:`create_app`'s other arguments."""

    # A builder, evaluated in the replica: the FastAPI app is created there, not pickled.
    def app() -> FastAPI:
        return create_app(settings=settings, **app_args)

    @serve.deployment(
        name="Gateway",
        num_replicas=settings.replicas,
        ray_actor_options={"num_cpus": settings.num_cpus},
        max_ongoing_requests=settings.max_ongoing_requests,
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
    """The request body, refused with :class:`PayloadTooLarge` as soon as it is known to be
    over ``limit`` bytes: from ``Content-Length`` before reading, else while reading."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(limit, int(declared))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _respond(reply: Reply) -> Response:
    if reply.stream is not None:
        return StreamingResponse(
            reply.stream, status_code=reply.status, media_type="text/event-stream",
            headers={**reply.headers, "cache-control": "no-cache"},
        )  # fmt: skip
    media_type = reply.headers.pop("content-type", JSON)
    return Response(reply.body, status_code=reply.status, media_type=media_type, headers=reply.headers)
