"""A runtime of this stack, called through its Ray Serve deployment handle.

Engine errors raised in the runtime replica arrive here as the same exception types (Ray
re-raises them); they become provider errors in this one module, so the router treats a local
runtime like any other provider (retries, fallbacks, circuit breaker).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from ray import serve
from ray.exceptions import RayError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

from serve.providers.base import collect
from serve.providers.errors import ProviderError, UpstreamConnectError, UpstreamStatus
from serve.runtimes.deployment import TEXT_DEPLOYMENT
from serve.runtimes.engine import EmbeddingResult, EngineError, GenerateRequest, TokenDelta

_RAY_ERRORS = (EngineError, RayError, BackPressureError, DeploymentUnavailableError)
METRICS_TIMEOUT_S = 2.0


def runtime_app_name(runtime: str) -> str:
    return f"runtime-{runtime}"


class LocalProvider:
    def __init__(self, runtime: str, deployment: str) -> None:
        self.runtime = runtime
        self.name = f"local:{runtime}"
        self._text = deployment == TEXT_DEPLOYMENT
        self._handle = serve.get_deployment_handle(deployment, app_name=runtime_app_name(runtime))

    async def generate(self, request: GenerateRequest) -> AsyncIterator[TokenDelta]:
        stream = self._handle.options(stream=True).generate.remote(request)
        try:
            async for delta in stream:
                yield delta
        except _RAY_ERRORS as exc:
            raise _translate(exc, self.name) from None
        finally:
            stream.cancel()

    async def complete(self, request: GenerateRequest) -> TokenDelta:
        """The runtime's stream, collected (runtimes have no other way to answer)."""
        return await collect(self.name, self.generate(request))

    async def embed(self, texts: list[str]) -> EmbeddingResult:
        try:
            return await self._handle.embed.remote(texts)
        except _RAY_ERRORS as exc:
            raise _translate(exc, self.name) from None

    async def engine_metrics(self) -> bytes:
        """The runtime's engine metrics (Prometheus text; one replica's), or nothing if it does not answer
        in time: a scrape must not hang on a busy runtime."""
        if not self._text:
            return b""
        try:
            return await asyncio.wait_for(self._handle.metrics.remote(), METRICS_TIMEOUT_S)
        except (TimeoutError, *_RAY_ERRORS):
            return b""

    async def close(self) -> None:
        pass


def _translate(exc: Exception, name: str) -> ProviderError:
    cause = exc.cause if isinstance(exc, RayTaskError) and exc.cause is not None else exc
    if isinstance(cause, EngineError):
        return UpstreamStatus(name, cause.status, cause.message, code=cause.code, param=cause.param)
    if isinstance(cause, BackPressureError):
        return UpstreamStatus(name, 503, "the runtime is overloaded", code="overloaded")
    return UpstreamConnectError(name, "the runtime is unavailable")
