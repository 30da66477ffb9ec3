"""Deployments registered while the stack runs are routed by the real gateway, and unregistered ones go.

One stack for the module (``control.stack.Stack`` in this process: Ray, Serve, the gateway with
its ``DatabaseRouteSource``, the control API, the metrics store) whose configuration names one
static model. The test writes ``deployments`` rows into the stack's SQLite database (migrated by
the real migrations) as the deployment pipeline does, pointing at a seeded OpenAI-compatible
upstream (tests/fakes/upstreams.py) and at a runtime Serve app started here, and drives the
gateway over HTTP with the official openai SDK.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from control.db import create_engine
from control.models import Cluster, Deployment, RegisteredModel
from tests.fakes.upstreams import OpenAIUpstream

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ADMIN_KEY = "sk-fnd-dynroutes-admin-key-0123456789abcdefghijklmn"
UPSTREAM_KEY = "sk-upstream-dynroutes-0123456789"
KEY_ENV = "FOUNDRY_TEST_DYNROUTES_UPSTREAM_KEY"
RUNTIME = "dep-tiny"
REGISTERED_WITHIN_S = 5.0  # the bound for /v1/models
MSG = [{"role": "user", "content": "hello there"}]
PRICING = {"input_per_1m": 3.0, "output_per_1m": 15.0}
TIMINGS: dict[str, float] = {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)
    return value


class Stack:
    def __init__(self, info, home: Path, upstream: OpenAIUpstream) -> None:
        self.info, self.home, self.upstream = info, home, upstream
        self.http = httpx.Client(timeout=60, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        self.client = openai.OpenAI(base_url=info.gateway_url, api_key=ADMIN_KEY, max_retries=0, timeout=60)
        self._ids: dict[str, str] = {}

    def models(self) -> list[str]:
        r = self.http.get(f"{self.info.gateway_url}/models")
        assert r.status_code == 200, r.text
        return [m["id"] for m in r.json()["data"]]

    def chat(self, model: str, **kw):
        return self.client.chat.completions.create(model=model, messages=MSG, **{"max_tokens": 6, **kw})

    def usage(self, model: str) -> dict | None:
        report = self.http.get(f"{self.info.control_url}/usage").json()
        return next((m for m in report["models"] if m["model"] == model), None)

    # --- the deployments table, written as the deployment pipeline writes it ------------------

    def _db(self, work) -> Any:
        async def run():
            engine = create_engine(self.info.database_url)
            try:
                async with AsyncSession(engine, expire_on_commit=False) as session:
                    result = await work(session)
                    await session.commit()
                    return result
            finally:
                await engine.dispose()

        return asyncio.run(run())

    def register(self, name: str, endpoint: dict, pricing: dict | None = PRICING) -> str:
        async def work(session: AsyncSession) -> str:
            model = RegisteredModel(name=f"m-{name}", source="builtin:foundry-tiny", kind="builtin")
            cluster = await session.get(Cluster, "clu_dynroutes") or Cluster(
                id="clu_dynroutes", name="local", kind="local"
            )
            dep = Deployment(name=name, model=model, cluster=cluster, status="running", engine="cpu",
                             endpoint=endpoint, pricing=pricing, registered=True)  # fmt: skip
            session.add(dep)
            await session.flush()
            return dep.id

        self._ids[name] = self._db(work)
        return self._ids[name]

    def change(self, name: str, **values) -> None:
        async def work(session: AsyncSession) -> None:
            await session.execute(
                update(Deployment)
                .where(Deployment.id == self._ids[name])
                .values(**values, version=Deployment.version + 1, updated_at=datetime.now(timezone.utc))
            )

        self._db(work)


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    from ray import serve

    from control.config import parse_config
    from control.stack import Stack as FoundryStack
    from serve.config import CPURuntimeConfig
    from serve.providers.local import runtime_app_name
    from serve.runtimes.deployment import build_runtime
    from serve.runtimes.tiny import ensure_tiny_model

    home = tmp_path_factory.mktemp("dynroutes")
    upstream = OpenAIUpstream(seed=7, api_key=UPSTREAM_KEY).start()
    config = parse_config(
        f'[server]\ningress = "proxy"\n'
        f'[models.static-chat.providers.up]\ntype = "openai"\nbase_url = "{upstream.url}"\napi_key_env = "{KEY_ENV}"\n',
        source="<test>",
        base_dir=home,
    )
    saved = {k: os.environ.get(k) for k in ("FOUNDRY_ADMIN_KEY", KEY_ENV)}
    os.environ["FOUNDRY_ADMIN_KEY"] = ADMIN_KEY
    os.environ[KEY_ENV] = UPSTREAM_KEY  # Ray's workers inherit it: the gateway resolves api_key_env there
    s = FoundryStack(config, home=home, port=_free_port())
    try:
        info = s.start()
        # the runtime a local deployment step would start: a Serve app of its own, no restart
        ensure_tiny_model(home)
        runtime = CPURuntimeConfig(model="builtin:foundry-tiny", num_cpus=0.2, max_num_seqs=4)
        serve.run(build_runtime(RUNTIME, runtime, home), name=runtime_app_name(RUNTIME), route_prefix=None)
        running = Stack(info, home, upstream)
        try:
            yield running
        finally:
            running.http.close()
            running.client.close()
    finally:
        s.stop()
        upstream.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def openai_endpoint(upstream: OpenAIUpstream) -> dict:
    return {"provider": {"type": "openai", "base_url": upstream.url, "model": "upstream-chat", "api_key_env": KEY_ENV}}


LOCAL_ENDPOINT = {"provider": {"type": "local", "runtime": RUNTIME}, "deployment": "TextRuntime"}


def test_an_openai_deployment_works_on_its_first_request_and_costs_its_pricing(stack):
    stack.register("dyn-openai", openai_endpoint(stack.upstream))
    t0 = time.monotonic()
    r = stack.chat("dyn-openai")  # no wait: the unknown name refreshes the routes once
    TIMINGS["first_request_s"] = time.monotonic() - t0
    assert r.model == "dyn-openai" and r.choices[0].message.content
    assert stack.upstream.requests[-1].json["model"] == "upstream-chat"
    assert stack.upstream.requests[-1].headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert "dyn-openai" in stack.models() and "static-chat" in stack.models()
    usage = wait_until(lambda: stack.usage("dyn-openai"), 30, "the request's metrics row")
    expected = (r.usage.prompt_tokens * PRICING["input_per_1m"] + r.usage.completion_tokens * PRICING["output_per_1m"]) / 1e6
    assert usage["requests"] == 1 and usage["cost_usd"] == pytest.approx(expected)


def test_a_local_runtime_deployment_is_listed_within_5_s_and_routed(stack):
    before = stack.models()
    stack.register("dyn-local", LOCAL_ENDPOINT, pricing={"input_per_1m": 1.0, "output_per_1m": 2.0})
    t0 = time.monotonic()
    wait_until(lambda: "dyn-local" in stack.models(), REGISTERED_WITHIN_S, "/v1/models to list dyn-local")
    TIMINGS["listed_s"] = time.monotonic() - t0
    assert "dyn-local" not in before
    r = stack.chat("dyn-local")
    assert r.model == "dyn-local" and r.usage.completion_tokens > 0
    usage = wait_until(lambda: stack.usage("dyn-local"), 30, "the request's metrics row")
    assert usage["cost_usd"] == pytest.approx((r.usage.prompt_tokens * 1.0 + r.usage.completion_tokens * 2.0) / 1e6)
    print(f"\nregistration: first request {TIMINGS.get('first_request_s', -1):.3f} s, listed after {TIMINGS['listed_s']:.3f} s")


def test_a_static_model_wins_over_a_deployment_of_the_same_name(stack):
    stack.register("static-chat", LOCAL_ENDPOINT)
    wait_until(lambda: stack.models().count("static-chat") == 1, 5, "one static-chat")
    before = stack.upstream.request_count
    stack.chat("static-chat")
    assert stack.upstream.request_count == before + 1  # still the file's upstream
    stack.change("static-chat", registered=False)


def test_unregistered_and_deleted_deployments_are_gone(stack):
    stack.change("dyn-openai", registered=False)
    stack.change("dyn-local", deleted_at=datetime.now(timezone.utc), registered=False)
    t0 = time.monotonic()
    # a known name costs no query: replicas notice within [gateway] routes_refresh_s
    wait_until(lambda: not {"dyn-openai", "dyn-local"} & set(stack.models()), REGISTERED_WITHIN_S, "the routes to go")
    TIMINGS["unlisted_s"] = time.monotonic() - t0
    print(f"\nunregistration: gone from /v1/models after {TIMINGS['unlisted_s']:.3f} s")
    for name in ("dyn-openai", "dyn-local"):
        with pytest.raises(openai.NotFoundError) as err:
            stack.chat(name)
        assert err.value.code == "model_not_found"
    assert "static-chat" in stack.models()


def test_a_stream_in_flight_when_its_route_is_removed_finishes(stack):
    stack.register("dyn-stream", openai_endpoint(stack.upstream))
    stack.upstream.chunk_interval_s = 0.3  # 8 words: a stream of about 2.4 s
    try:
        stream = stack.chat("dyn-stream", stream=True, max_tokens=64)
        chunks = iter(stream)
        first = next(chunks)
        assert first.model == "dyn-stream"
        stack.change("dyn-stream", registered=False)
        wait_until(lambda: "dyn-stream" not in stack.models(), REGISTERED_WITHIN_S, "the route to go")
        rest = list(chunks)
    finally:
        stack.upstream.chunk_interval_s = 0.0
    text = "".join(c.choices[0].delta.content or "" for c in [first, *rest] if c.choices)
    assert len(text.split()) == stack.upstream.tokens
    assert [c.choices[0].finish_reason for c in rest if c.choices][-1] == "stop"
    with pytest.raises(openai.NotFoundError):
        stack.chat("dyn-stream")
