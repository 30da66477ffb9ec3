"""The router: order, weights, fallbacks, retries with backoff, Retry-After, breakers, timeouts."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from serve.config import ModelConfig
from serve.gateway.breaker import CircuitBreaker
from serve.gateway.errors import GatewayError, InvalidRequest, ProviderUnavailable
from serve.gateway.routing import ModelRoute, Outcome, Router, Slot
from serve.providers.base import collect
from serve.providers.errors import UpstreamConnectError, UpstreamStatus, UpstreamTimeout
from serve.runtimes.engine import EmbeddingResult, GenerateRequest, SamplingParams, TokenDelta

REQ = GenerateRequest(request_id="r", params=SamplingParams(max_tokens=3), prompt="hi")


class ScriptedProvider:
    """A Provider whose next calls follow a script: "ok", an exception, ("stall", s), ("slow", s)."""

    def __init__(self, name: str, script: list | None = None, *, default="ok") -> None:
        self.name = name
        self.script = list(script or [])
        self.default = default
        self.calls = 0
        self.methods: list[str] = []  # "generate" or "complete", per call

    def _next(self):
        self.calls += 1
        return self.script.pop(0) if self.script else self.default

    def generate(self, request):
        self.methods.append("generate")
        return self._deltas()

    async def complete(self, request):
        self.methods.append("complete")
        return await collect(self.name, self._deltas())

    async def _deltas(self):
        step = self._next()
        if isinstance(step, Exception):
            raise step
        if isinstance(step, tuple) and step[0] == "slow":
            await asyncio.sleep(step[1])
        yield TokenDelta(self.name, None, 1, 1)
        if isinstance(step, tuple) and step[0] == "stall":
            await asyncio.sleep(step[1])
        if isinstance(step, tuple) and step[0] == "drop":
            raise UpstreamConnectError(self.name, "connection dropped")
        yield TokenDelta("!", "stop", 1, 2)

    async def embed(self, texts):
        step = self._next()
        if isinstance(step, Exception):
            raise step
        return EmbeddingResult([[1.0]], 1)

    async def close(self):
        pass


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def route(name: str, providers: dict[str, ScriptedProvider], *, clock=None, weights=None, **cfg) -> ModelRoute:
    config = ModelConfig.model_validate(
        {"providers": {p: {"type": "local"} for p in providers}, **cfg}
    )
    slots = {
        p: Slot(
            model=name,
            provider=prov,
            weight=(weights or {}).get(p, 1.0),
            breaker=CircuitBreaker(failure_threshold=3, cooldown_s=10, **({"clock": clock} if clock else {})),
        )
        for p, prov in providers.items()
    }
    return ModelRoute(name=name, ranks=[[slots[n] for n in rank] for rank in config.ranks()], config=config)


def router(*routes: ModelRoute, clock: FakeClock | None = None, seed: int = 0) -> Router:
    kw = {"clock": clock, "sleep": clock.sleep} if clock else {}
    return Router({r.name: r for r in routes}, rng=random.Random(seed), **kw)


def err(status: int, retry_after: float | None = None) -> UpstreamStatus:
    return UpstreamStatus("p", status, f"status {status}", retry_after_s=retry_after)


async def test_order_is_routing_then_fallback_models_cycle_safe():
    a, b, c = ScriptedProvider("a"), ScriptedProvider("b"), ScriptedProvider("c")
    main = route("main", {"a": a, "b": b}, routing=["b", "a"], fallback_models=["small"])
    small = route("small", {"c": c}, fallback_models=["main"])  # a cycle back to main
    r = router(main, small)
    assert [s.provider.name for s in r.candidates(r.route("main"))] == ["b", "a", "c"]
    assert [s.provider.name for s in r.candidates(r.route("small"))] == ["c", "b", "a"]


async def test_weights_spread_load_within_a_rank():
    a, b = ScriptedProvider("a"), ScriptedProvider("b")
    r = router(route("m", {"a": a, "b": b}, routing=[["a", "b"]], weights={"a": 3.0, "b": 1.0}), seed=1)
    firsts = Counter(r.candidates(r.route("m"))[0].provider.name for _ in range(4000))
    assert firsts["a"] / 4000 == pytest.approx(0.75, abs=0.03)


async def test_retryable_failure_falls_through_to_the_backup():
    primary = ScriptedProvider("primary", [UpstreamConnectError("primary", "refused")])
    backup = ScriptedProvider("backup")
    r = router(route("m", {"primary": primary, "backup": backup}))
    outcome = Outcome()
    slot, whole = await r.complete(r.route("m"), REQ, outcome)
    assert slot.provider is backup and (whole.text, whole.finish_reason, whole.completion_tokens) == ("backup!", "stop", 2)
    assert outcome.attempts == 2 and outcome.provider == "backup" and not outcome.fallback_used


async def test_fallback_model_is_recorded():
    r = router(
        route("m", {"a": ScriptedProvider("a", default=err(503))}, fallback_models=["f"], retries={"num_retries": 0}),
        route("f", {"b": ScriptedProvider("b")}),
    )
    outcome = Outcome()
    await r.complete(r.route("m"), REQ, outcome)
    assert outcome.fallback_used and outcome.model_served == "f"


@pytest.mark.parametrize("status", [400, 401, 404, 422])
async def test_other_4xx_are_never_retried(status):
    primary = ScriptedProvider("primary", [err(status)])
    backup = ScriptedProvider("backup")
    r = router(route("m", {"primary": primary, "backup": backup}))
    with pytest.raises(GatewayError) as exc:
        await r.complete(r.route("m"), REQ, Outcome())
    assert backup.calls == 0 and primary.calls == 1
    if status in (400, 422):
        assert isinstance(exc.value, InvalidRequest)
    else:
        assert exc.value.status == 502


async def test_retries_back_off_with_jitter_capped():
    clock = FakeClock()
    p = ScriptedProvider("p", [err(500), err(502)])  # below the breaker's threshold of 3
    r = router(route("m", {"p": p}, clock=clock, retries={"num_retries": 3, "base_delay_s": 1.0, "max_delay_s": 1.5}), clock=clock)
    outcome = Outcome()
    await r.complete(r.route("m"), REQ, outcome)
    assert outcome.attempts == 3
    assert len(clock.sleeps) == 2
    assert all(0 <= s <= 1.5 for s in clock.sleeps)
    assert len(set(clock.sleeps)) == 2  # jittered


async def test_retry_after_is_honoured():
    clock = FakeClock()
    p = ScriptedProvider("p", [err(429, retry_after=2.0)])
    r = router(route("m", {"p": p}, clock=clock, retries={"num_retries": 1, "max_delay_s": 4.0}), clock=clock)
    await r.complete(r.route("m"), REQ, Outcome())
    assert clock.sleeps and clock.sleeps[0] >= 2.0


async def test_retry_after_beyond_the_cap_gives_the_429_back():
    clock = FakeClock()
    p = ScriptedProvider("p", [err(429, retry_after=30.0)])
    r = router(route("m", {"p": p}, clock=clock, retries={"num_retries": 2, "max_delay_s": 4.0}), clock=clock)
    with pytest.raises(GatewayError) as exc:
        await r.complete(r.route("m"), REQ, Outcome())
    assert exc.value.status == 429 and exc.value.retry_after_s == 30.0
    assert p.calls == 1 and clock.sleeps == []


async def test_breaker_opens_fails_fast_and_recovers_through_a_probe():
    clock = FakeClock()
    p = ScriptedProvider("p", [UpstreamConnectError("p", "down")] * 3)
    r = router(route("m", {"p": p}, clock=clock, retries={"num_retries": 0}), clock=clock)
    for _ in range(3):
        with pytest.raises(ProviderUnavailable):
            await r.complete(r.route("m"), REQ, Outcome())
    calls = p.calls
    with pytest.raises(ProviderUnavailable) as exc:  # open: not even tried
        await r.complete(r.route("m"), REQ, Outcome())
    assert p.calls == calls and exc.value.code == "circuit_open" and exc.value.retry_after_s > 0
    clock.now += 10  # cooldown over: the next request probes and succeeds
    await r.complete(r.route("m"), REQ, Outcome())
    assert r.routes["m"].ranks[0][0].breaker.state == "closed"


async def test_open_breaker_sends_traffic_to_the_backup_without_trying_primary():
    clock = FakeClock()
    primary = ScriptedProvider("primary", default=UpstreamConnectError("primary", "down"))
    backup = ScriptedProvider("backup")
    r = router(route("m", {"primary": primary, "backup": backup}, clock=clock), clock=clock)
    for _ in range(10):
        await r.complete(r.route("m"), REQ, Outcome())
    assert primary.calls == 3  # threshold, then skipped
    assert backup.calls == 10


async def test_ttft_timeout_moves_to_the_next_provider():
    slow = ScriptedProvider("slow", [("slow", 5.0)])
    fast = ScriptedProvider("fast")
    r = router(route("m", {"slow": slow, "fast": fast}, timeouts={"ttft_ms": 50}))
    opened = await r.open_stream(r.route("m"), REQ, Outcome())
    assert opened.slot.provider is fast


async def test_stall_after_the_first_delta_fails_the_stream():
    p = ScriptedProvider("p", [("stall", 5.0)])
    r = router(route("m", {"p": p}, timeouts={"total_ms": 100}))
    opened = await r.open_stream(r.route("m"), REQ, Outcome())
    with pytest.raises(UpstreamTimeout):
        async for _ in opened.rest:
            pass


async def test_a_slow_reader_is_not_a_stalled_stream():
    p = ScriptedProvider("p")
    r = router(route("m", {"p": p}, timeouts={"total_ms": 100}))
    opened = await r.open_stream(r.route("m"), REQ, Outcome())
    texts = []
    async for delta in opened.rest:  # the gap limit times the upstream, not the client
        await asyncio.sleep(0.3)
        texts.append(delta.text)
    assert texts == ["!"]


async def test_non_streamed_request_asks_for_the_whole_answer_unless_ttft_is_bounded():
    plain, timed = ScriptedProvider("plain"), ScriptedProvider("timed")
    r = router(route("m", {"p": plain}), route("t", {"p": timed}, timeouts={"ttft_ms": 1000}))
    _, whole = await r.complete(r.route("m"), REQ, Outcome())
    _, streamed = await r.complete(r.route("t"), REQ, Outcome())
    assert plain.methods == ["complete"] and timed.methods == ["generate"]  # only a stream shows the first token
    assert (whole, streamed) == (TokenDelta("plain!", "stop", 1, 2), TokenDelta("timed!", "stop", 1, 2))


async def test_non_streamed_ttft_timeout_moves_to_the_next_provider():
    slow = ScriptedProvider("slow", [("slow", 5.0)])
    fast = ScriptedProvider("fast")
    r = router(route("m", {"slow": slow, "fast": fast}, timeouts={"ttft_ms": 50}))
    slot, whole = await r.complete(r.route("m"), REQ, Outcome())
    assert slot.provider is fast and whole.text == "fast!"


async def test_non_streamed_request_past_total_ms_moves_to_the_next_provider():
    slow = ScriptedProvider("slow", [("slow", 5.0)])
    fast = ScriptedProvider("fast")
    r = router(route("m", {"slow": slow, "fast": fast}, timeouts={"total_ms": 200}))
    with pytest.raises(GatewayError) as exc:  # the whole budget went to the first attempt
        await r.complete(r.route("m"), REQ, Outcome())
    assert exc.value.status == 504 and fast.calls == 0


async def test_non_streamed_request_survives_a_mid_generation_drop():
    flaky = ScriptedProvider("flaky", [("drop", 0)])
    backup = ScriptedProvider("backup")
    r = router(route("m", {"flaky": flaky, "backup": backup}))
    slot, _ = await r.complete(r.route("m"), REQ, Outcome())
    assert slot.provider is backup


async def test_embeddings_use_the_same_chain():
    a = ScriptedProvider("a", [err(500)])
    b = ScriptedProvider("b")
    r = router(route("m", {"a": a, "b": b}))
    slot, result = await r.embed(r.route("m"), ["x"], Outcome())
    assert slot.provider is b and result.vectors == [[1.0]]
