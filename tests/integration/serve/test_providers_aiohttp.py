"""The providers' aiohttp session (serve/providers/_http.py): made in the event loop that first
uses it, never when the provider is built, bounded by ``max_connections``, and closed with the
provider. (Errors, cancellation and connection reuse are in test_providers_contract.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from serve.config import OpenAIProvider
from serve.providers.openai_compat import OpenAICompatibleProvider
from serve.runtimes.engine import ChatMessage, GenerateRequest
from tests.fakes.upstreams import OpenAIUpstream

KEY = "sk-aiohttp-test-0123456789"
REQUEST = GenerateRequest("r1", messages=(ChatMessage("user", "Name some words."),))


@pytest.fixture(scope="module")
def upstream() -> Iterator[OpenAIUpstream]:
    with OpenAIUpstream(seed=5, api_key=KEY) as server:
        yield server


def build(upstream: OpenAIUpstream, max_connections: int = 256) -> OpenAICompatibleProvider:
    cfg = OpenAIProvider(type="openai", base_url=upstream.url, model="gpt-x", max_connections=max_connections)
    return OpenAICompatibleProvider.from_config("chat-main", "p", cfg, KEY)


async def text(provider: OpenAICompatibleProvider) -> str:
    return "".join([delta.text async for delta in provider.generate(REQUEST)])


def test_a_provider_built_outside_an_event_loop_serves_requests_in_the_loop_that_uses_it(upstream):
    upstream.reset()
    provider = build(upstream)  # as a FastAPI lifespan may, before the replica's loop serves

    async def serve() -> str:
        try:
            return await text(provider)
        finally:
            await provider.close()

    assert asyncio.run(serve())
    assert upstream.streams_completed == 1


async def test_a_provider_closed_before_any_request_closes_cleanly(upstream):
    await build(upstream).close()


async def test_max_connections_bounds_the_connections_opened(upstream):
    upstream.reset()
    provider = build(upstream, max_connections=2)
    try:
        answers = await asyncio.gather(*(text(provider) for _ in range(8)))
    finally:
        await provider.close()
    assert len(set(answers)) == 1 and answers[0]
    assert upstream.streams_completed == 8
    assert 1 <= len(upstream.connections_seen) <= 2
