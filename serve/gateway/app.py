"""The OpenAI-compatible HTTP surface, and the Ray Serve deployment that hosts it.

Mounted by Ray Serve under ``/v1``, so the routes here are ``/chat/completions``, ... .

Example::

    app = build_gateway(models=cfg.models, runtimes=..., key_source=..., metrics=...,
                        settings=cfg.gateway, metrics_settings=cfg.metrics)
    serve.run(app, name="gateway", route_prefix="/v1")
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException
from ray.serve.deployment import Application

from serve.auth import KeySource
from serve.config import GatewayConfig, LocalProvider as LocalProviderConfig, MetricsConfig, ModelConfig
from serve.gateway.errors import error_body
from serve.gateway.keycache import KeyCache
from serve.gateway.service import GatewayService, Reply
from serve.metrics.actor import MetricsClient, MetricsRecorder
from serve.providers.base import Provider
from serve.providers.local import LocalProvider

JSON = "application/json"


def create_app(
    *,
    models: dict[str, ModelConfig],
    runtime_deployments: dict[str, str],
    key_source: KeySource,
    metrics: MetricsClient,
    settings: GatewayConfig,
    metrics_settings: MetricsConfig,
) -> FastAPI:
    """The gateway's FastAPI app. ``runtime_deployments`` maps runtime name → Serve deployment
    name; resources (handles, key cache, recorder) are created in the lifespan, in the replica."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        providers: dict[str, list[Provider]] = {
            name: [_provider(name, pname, p, runtime_deployments) for pname, p in model.providers.items()]
            for name, model in models.items()
        }
        keys = KeyCache(key_source, refresh_s=settings.key_refresh_s)
        await keys.start()
        recorder = MetricsRecorder(
            metrics, interval_s=metrics_settings.flush_interval_ms / 1000, max_rows=metrics_settings.flush_max_rows
        )
        app.state.gateway = GatewayService(providers=providers, keys=keys, recorder=recorder)
        try:
            yield
        finally:
            await recorder.close()  # nothing recorded is lost on shutdown
            await keys.close()

    app = FastAPI(title="Foundry gateway", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # unknown paths and methods get the OpenAI error shape too
        body = error_body(str(exc.detail), "invalid_request_error", None, None)
        return Response(body, status_code=exc.status_code, media_type=JSON)

    @app.post("/chat/completions")
    async def chat_completions(request: Request) -> Response:
        svc: GatewayService = request.app.state.gateway
        return _respond(await svc.chat_completions(request.headers.get("authorization"), await request.body()))

    @app.post("/completions")
    async def completions(request: Request) -> Response:
        svc: GatewayService = request.app.state.gateway
        return _respond(await svc.completions(request.headers.get("authorization"), await request.body()))

    @app.post("/embeddings")
    async def embeddings(request: Request) -> Response:
        svc: GatewayService = request.app.state.gateway
        return _respond(await svc.embeddings(request.headers.get("authorization"), await request.body()))

    @app.get("/models")
    async def list_models(request: Request) -> Response:
        svc: GatewayService = request.app.state.gateway
        return _respond(await svc.models(request.headers.get("authorization")))

    return app


def build_gateway(
    *,
    models: dict[str, ModelConfig],
    runtime_deployments: dict[str, str],
    key_source: KeySource,
    metrics: MetricsClient,
    settings: GatewayConfig,
    metrics_settings: MetricsConfig,
) -> Application:
    # A builder, evaluated in the replica: the FastAPI app is created there, not pickled.
    def app() -> FastAPI:
        return create_app(
            models=models,
            runtime_deployments=runtime_deployments,
            key_source=key_source,
            metrics=metrics,
            settings=settings,
            metrics_settings=metrics_settings,
        )

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


def _provider(model: str, name: str, cfg, runtime_deployments: dict[str, str]) -> Provider:
    if isinstance(cfg, LocalProviderConfig):
        runtime = cfg.runtime or model
        return LocalProvider(runtime, runtime_deployments[runtime])
    raise ValueError(f"models.{model}.providers.{name}: unsupported provider type {cfg.type!r}")


def _respond(reply: Reply) -> Response:
    headers = {"x-request-id": reply.request_id}
    if reply.provider:
        headers["x-foundry-provider"] = reply.provider
    if reply.stream is not None:
        headers["cache-control"] = "no-cache"
        return StreamingResponse(reply.stream, status_code=reply.status, media_type="text/event-stream", headers=headers)
    return Response(reply.body, status_code=reply.status, media_type=JSON, headers=headers)
