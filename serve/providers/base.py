"""The interface the gateway calls; one implementation per provider type."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from serve.runtimes.engine import EmbeddingResult, GenerateRequest, TokenDelta


class Provider(Protocol):
    name: str  # "local:foundry-tiny", recorded in metrics rows

    def generate(self, request: GenerateRequest) -> AsyncIterator[TokenDelta]:
        """Stream the generation. Closing the iterator cancels the upstream request."""
        ...

    async def embed(self, texts: list[str]) -> EmbeddingResult: ...

    async def close(self) -> None:
        """Release pooled connections (the gateway replica is shutting down)."""
        ...
