"""The gateway's route table: models registered at run time are routed at once, removed ones go,
requests in flight keep what they started with, a bad route never takes the others down."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from serve.config import ModelConfig
from serve.gateway.errors import ModelNotFound
from serve.gateway.routetable import RouteTable
from serve.gateway.routing import ModelRoute, Outcome, Router, Slot
from serve.runtimes.engine import GenerateRequest, SamplingParams, TokenDelta
from tests.fakes.routes import MemoryRouteSource

REQ = GenerateRequest(request_id="r", params=SamplingParams(max_tokens=3), prompt="hi")


async def wait_until(cond, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


class StepProvider:
    """A provider whose stream yields one delta, then waits for ``go`` before finishing."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False
        self.go = asyncio.Event()

    async def generate(self, request):
        assert not self.closed, "used after close"
        yield TokenDelta("a", None, 1, 1)
        await self.go.wait()
        assert not self.closed, "closed while a stream was using it"
        yield TokenDelta("b", "stop", 1, 2)

    async def embed(self, texts):
        raise NotImplementedError

    async def close(self) -> None:
        self.closed = True


class Builder:
    """The RouteBuilder: one StepProvider per providers table, remembered for the asserts."""

    def __init__(self) -> None:
        self.built: list[str] = []
        self.providers: dict[str, StepProvider] = {}

    def __call__(self, name: str, config: ModelConfig, runtime_deployments: dict[str, str]) -> ModelRoute:
        if any(p.type == "local" and (p.runtime or name) not in runtime_deployments for p in config.providers.values()):
            raise KeyError(f"no Serve deployment for the runtime of {name!r}")
        self.built.append(name)
        slots = []
        for pname in config.providers:
            provider = self.providers[f"{name}/{pname}"] = StepProvider(f"{name}/{pname}")
            slots.append([Slot(model=name, provider=provider, pricing=config.pricing)])
        return ModelRoute(name=name, ranks=slots, config=config)


def table(url: str = "http://up/v1", **extra) -> dict:
    return {"providers": {"p": {"type": "openai", "base_url": url}}, **extra}


def static_route(builder: Builder, name: str) -> ModelRoute:
    return builder(name, ModelConfig.model_validate(table()), {})


async def started(source: MemoryRouteSource, builder: Builder, *, static=(), **kw) -> RouteTable:
    routes = RouteTable(
        Router({}), static={n: static_route(builder, n) for n in static}, source=source, build=builder,
        **{"refresh_s": 3600, **kw},
    )  # fmt: skip
    await routes.start()
    return routes


async def test_dynamic_routes_join_static_ones_and_static_wins_a_clash(caplog):
    src, builder = MemoryRouteSource(), Builder()
    src.put("dyn", table(pricing={"input_per_1m": 2.0, "output_per_1m": 8.0}))
    src.put("chat", table("http://elsewhere/v1"))
    with caplog.at_level(logging.WARNING, logger="serve.gateway.routetable"):
        routes = await started(src, builder, static=["chat"])
    assert sorted(routes.router.routes) == ["chat", "dyn"]
    assert routes.router.routes["chat"].config.providers["p"].base_url == "http://up/v1"  # the file's
    assert "route 'chat' (test chat) ignored: the configuration file defines that model" in caplog.text
    assert routes.router.routes["dyn"].ranks[0][0].pricing.output_per_1m == 8.0
    assert routes.dynamic == ["dyn"]
    await routes.close()


async def test_a_model_registered_a_moment_ago_works_on_its_first_request():
    src, builder = MemoryRouteSource(), Builder()
    routes = await started(src, builder)  # polls once an hour: only the miss can find it
    src.put("new", table())
    assert routes.router.routes.get("new") is None
    route = await routes.find("new")
    assert route.name == "new" and routes.router.routes["new"] is route
    with pytest.raises(ModelNotFound):
        await routes.find("never-registered")
    await routes.close()


async def test_concurrent_misses_share_one_refresh_that_started_after_them():
    src, builder = MemoryRouteSource(), Builder()
    routes = await started(src, builder)
    src.gate.clear()  # a refresh in flight, started before the model exists
    early = asyncio.ensure_future(routes._shared_refresh())
    await wait_until(lambda: src.fingerprints == 2)
    src.put("late", table())
    misses = [asyncio.ensure_future(routes.find("late")) for _ in range(50)]
    await asyncio.sleep(0)
    src.gate.set()
    found = await asyncio.gather(*misses)
    await early
    assert {r.name for r in found} == {"late"}
    # the start, the refresh in flight, and one more for all fifty misses
    assert (src.fingerprints, src.loads) == (3, 2)
    await routes.close()


async def test_polling_adds_changes_and_removes_routes_keeping_unchanged_ones():
    src, builder = MemoryRouteSource(), Builder()
    src.put("a", table())
    src.put("b", table())
    routes = await started(src, builder, refresh_s=0.01, close_grace_s=0)
    a, b = routes.router.routes["a"], routes.router.routes["b"]
    src.put("b", table(pricing={"input_per_1m": 1.0}))
    src.put("c", table())
    await wait_until(lambda: "c" in routes.router.routes)
    assert routes.router.routes["a"] is a  # same description: same providers, pools, breakers
    assert routes.router.routes["b"] is not b and routes.router.routes["b"].config.pricing.input_per_1m == 1.0
    assert builder.built == ["a", "b", "b", "c"]
    src.remove("a")
    await wait_until(lambda: "a" not in routes.router.routes)
    old_b = b.ranks[0][0].provider
    await wait_until(lambda: builder.providers["a/p"].closed and old_b.closed)  # after their grace (0 here)
    assert not builder.providers["b/p"].closed and not builder.providers["c/p"].closed
    await routes.close()
    assert builder.providers["c/p"].closed and src.closed


async def test_a_stream_in_flight_finishes_on_the_route_it_started_with():
    src, builder = MemoryRouteSource(), Builder()
    src.put("dyn", table(pricing={"output_per_1m": 5.0}))
    routes = await started(src, builder, close_grace_s=1.0)
    router = routes.router
    route = router.routes["dyn"]
    outcome = Outcome()
    opened = await router.open_stream(route, REQ, outcome)
    src.remove("dyn")
    with pytest.raises(ModelNotFound):
        await routes.find("dyn")  # gone for new requests
    provider = builder.providers["dyn/p"]
    assert not provider.closed  # in its grace period
    provider.go.set()
    rest = [d async for d in opened.rest]
    assert [d.text for d in rest] == ["b"] and rest[-1].finish_reason == "stop"
    assert outcome.pricing is not None and outcome.pricing.output_per_1m == 5.0  # the cost column's
    await wait_until(lambda: provider.closed)
    await routes.close()


async def test_a_bad_route_is_logged_and_skipped_and_the_others_still_apply(caplog):
    src, builder = MemoryRouteSource(), Builder()
    src.put("good", table())
    src.put("no-providers", {"providers": {}})
    src.put("typo", table(pricing={"input_per_1M": 1.0}))
    src.put("no-runtime", {"providers": {"p": {"type": "local", "runtime": "rt"}}})  # no Serve deployment given
    with caplog.at_level(logging.ERROR, logger="serve.gateway.routetable"):
        routes = await started(src, builder)
    assert sorted(routes.router.routes) == ["good"]
    for name in ("no-providers", "typo", "no-runtime"):
        assert f"route {name!r} (test {name}) skipped" in caplog.text
    assert "input_per_1M" in caplog.text
    src.put("local", {"providers": {"p": {"type": "local", "runtime": "rt"}}}, {"rt": "TextRuntime"})
    assert (await routes.find("local")).name == "local"
    await routes.close()


async def test_a_failing_source_keeps_the_routes_it_gave_and_never_fails_a_request(caplog):
    src, builder = MemoryRouteSource(), Builder()
    src.put("dyn", table())
    routes = await started(src, builder, static=["chat"])
    src.failing = ConnectionError("database is down")
    src.put("other", table())
    with caplog.at_level(logging.WARNING, logger="serve.gateway.routetable"):
        with pytest.raises(ModelNotFound):
            await routes.find("other")
    assert "refreshing the gateway's routes failed: database is down" in caplog.text
    assert sorted(routes.router.routes) == ["chat", "dyn"]
    src.failing = None
    assert (await routes.find("other")).name == "other"
    await routes.close()


async def test_a_source_down_at_start_leaves_the_static_routes_then_catches_up():
    src, builder = MemoryRouteSource(), Builder()
    src.put("dyn", table())
    src.failing = ConnectionError("database is down")
    routes = await started(src, builder, static=["chat"], refresh_s=0.01)
    assert sorted(routes.router.routes) == ["chat"]
    src.failing = None
    await wait_until(lambda: "dyn" in routes.router.routes)
    await routes.close()


async def test_without_a_source_only_the_static_routes_and_no_refresh():
    builder = Builder()
    routes = RouteTable(Router({}), static={"chat": static_route(builder, "chat")}, source=None, build=builder)
    await routes.start()
    assert list(routes.router.routes) == ["chat"]
    with pytest.raises(ModelNotFound):
        await routes.find("dyn")
    await routes.close()
    assert builder.providers["chat/p"].closed
