"""Rate limits and budgets across two gateway replicas sharing a real Redis, as users set them:
`foundry keys create --rpm ...`, then concurrent requests through the OpenAI SDK."""

from __future__ import annotations

import asyncio
import json
import os

import openai
import pytest
from e2e_support import free_port, start_stack

from tests.fakes.upstreams import OpenAIUpstream

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def upstream():
    with OpenAIUpstream(latency_s=0.05, record=False) as up:
        yield up


@pytest.fixture(scope="module")
def redis_stack(tmp_path_factory, redis_url, upstream):
    tmp = tmp_path_factory.mktemp("limits")
    config = tmp / "foundry.toml"
    config.write_text(
        f"""
[server]
ingress = "haproxy"
[gateway]
replicas = 2
num_cpus = 0.1
[limits]
redis_url = "{redis_url}"
[models.chat.pricing]
input_per_1m = 1000.0
output_per_1m = 1000.0
[models.chat.providers.up]
type = "openai"
base_url = "{upstream.url}"
api_key_env = "E2E_UPSTREAM_KEY"
"""
    )
    os.environ["E2E_UPSTREAM_KEY"] = "unused"
    stack = start_stack(tmp / "home", free_port(), config=config)
    yield stack
    stack.stop()


async def burst(stack, key: str, n: int) -> list:
    client = openai.AsyncOpenAI(base_url=stack.base_url, api_key=key, max_retries=0, timeout=60)

    async def one():
        try:
            return await client.chat.completions.with_raw_response.create(
                model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=4
            )
        except openai.RateLimitError as exc:
            return exc

    try:
        return await asyncio.gather(*(one() for _ in range(n)))
    finally:
        await client.close()


def test_rpm_10_lets_exactly_10_of_15_concurrent_requests_through(redis_stack):
    key = json.loads(redis_stack.cli("keys", "create", "--project", "rl", "--rpm", "10", "--json").stdout)["key"]
    results = asyncio.run(burst(redis_stack, key, 15))
    ok = [r for r in results if not isinstance(r, Exception)]
    limited = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert (len(ok), len(limited)) == (10, 5)
    for err in limited:
        assert err.code == "rate_limit_exceeded"
        assert int(err.response.headers["retry-after"]) >= 1
        assert err.response.headers["x-ratelimit-limit-requests"] == "10"
    assert ok[0].headers["x-ratelimit-limit-requests"] == "10"


def test_token_budget_is_exhausted(redis_stack):
    created = redis_stack.cli(
        "keys", "create", "--project", "budget", "--budget-tokens", "40", "--budget-period", "day", "--json"
    )
    key = json.loads(created.stdout)["key"]
    client = openai.OpenAI(base_url=redis_stack.base_url, api_key=key, max_retries=0)
    used, last = 0, 0
    with pytest.raises(openai.RateLimitError) as exc:
        for _ in range(50):
            r = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
            used, last = used + r.usage.total_tokens, r.usage.total_tokens
    assert exc.value.code == "insufficient_quota"
    # refused as soon as the next request's reservation would not fit: never over, never far under
    assert 40 - 2 * last < used <= 40
