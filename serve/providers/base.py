"""The interface the gateway calls; one implementation per provider type."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Protocol

from serve.providers.errors import UpstreamProtocolError
from serve.runtimes.engine import EmbeddingResult, GenerateRequest, TokenDelta


class Provider(Protocol):
    name: str  # "local:foundry-tiny", recorded in metrics rows

    def generate(self, request: GenerateRequest) -> AsyncIterator[TokenDelta]:
        """Stream the generation. Closing the iterator cancels the upstream request."""
        ...

    async def complete(self, request: GenerateRequest) -> TokenDelta:
        """The whole generation as one delta: all the text, the finish reason and the token
        totals (for clients that asked for no stream). A provider without a cheaper way than
        its stream returns :func:`collect` of it."""
        ...

    async def embed(self, texts: list[str]) -> EmbeddingResult: ...

    async def close(self) -> None:
        """Release pooled connections (the gateway replica is shutting down)."""
        ...


async def collect(provider: str, deltas: AsyncIterator[TokenDelta]) -> TokenDelta:
    """``provider``'s stream of deltas as one: the texts joined, the last delta's finish reason
    and totals (closed however it ends)."""
    texts: list[str] = []
    last: TokenDelta | None = None
    async with aclosing(deltas):
        async for last in deltas:
            if last.text:
                texts.append(last.text)
    if last is None:
        raise UpstreamProtocolError(provider, "the stream ended before any token")
    return TokenDelta("".join(texts), last.finish_reason, last.prompt_tokens, last.completion_tokens)
