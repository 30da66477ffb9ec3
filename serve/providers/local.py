"""A runtime of this stack, called through its Ray Serve deployment handle.

Engine errors raised in the runtime replica arrive here as the same exception types (Ray
re-raises them); they are translated into gateway errors in this one module.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from ray import serve
from ray.exceptions import RayError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

from serve.gateway.errors import GatewayError, InvalidRequest, ProviderUnavailable
from serve.runtimes.engine import EmbeddingResult, EngineError, GenerateRequest, TokenDelta

EMBED_TIMEOUT_S = 120.0
FIRST_DELTA_TIMEOUT_S = 300.0


def runtime_app_name(runtime: str) -> str:
    return f"runtime-{runtime}"


class LocalProvider:
    def __init__(self, runtime: str, deployment: str) -> None:
        self.runtime = runtime
        self.name = f"local:{runtime}"
        self._handle = serve.get_deployment_handle(deployment, app_name=runtime_app_name(runtime))

    async def generate(self, request: GenerateRequest) -> AsyncIterator[TokenDelta]:
        stream = self._handle.options(stream=True).generate.remote(request)
        try:
            async for delta in stream:
                yield delta
        except (EngineError, RayError, BackPressureError, DeploymentUnavailableError) as exc:
            raise _translate(exc, self.name) from None
        finally:
            stream.cancel()

    async def embed(self, texts: list[str]) -> EmbeddingResult:
        try:
            return await asyncio.wait_for(self._handle.embed.remote(texts), EMBED_TIMEOUT_S)
        except TimeoutError:
            raise ProviderUnavailable(f"{self.name} did not answer within {EMBED_TIMEOUT_S:.0f} s") from None
        except (EngineError, RayError, BackPressureError, DeploymentUnavailableError) as exc:
            raise _translate(exc, self.name) from None


def _translate(exc: Exception, name: str) -> GatewayError:
    if isinstance(exc, EngineError):
        if exc.status_code < 500:
            return InvalidRequest(exc.message, param=exc.param, code=exc.code)
        return ProviderUnavailable(f"{name}: {exc.message}", code=exc.code)
    if isinstance(exc, BackPressureError):
        return ProviderUnavailable(f"{name} is overloaded; retry shortly", code="overloaded")
    return ProviderUnavailable(f"{name} is unavailable")
