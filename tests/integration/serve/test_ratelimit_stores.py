"""The limiter's contract, run on every store: in-process memory, the embedded Ray actor, and a
real redis-server (started by tests/conftest.py). Time is injected, so windows slide and
periods roll without waiting. Also: Redis shared by two processes (two gateway replicas), an
actor shared by two handles, and what a store that is down does."""

from __future__ import annotations

import asyncio
import calendar
import json
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import ray
import redis.asyncio as aioredis

from serve.auth import ApiKeyInfo, Budget, ModelLimit
from serve.config import LimitsConfig
from serve.gateway.errors import LimitsUnavailable, QuotaExceeded, RateLimited
from serve.gateway.ratelimit import ActorStore, Limiter, MemoryStore, RedisStore, Ticket, build_limiter

T0 = float(calendar.timegm((2030, 1, 31, 23, 0, 0)))  # an hour before a day and a month end


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def limiter_actor() -> Iterator[str]:
    """A Ray cluster for this module, and the name of this module's limiter actor."""
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    name = f"foundry-limiter-test-{uuid.uuid4().hex[:8]}"
    yield name
    try:
        ray.kill(ray.get_actor(name))
    except ValueError:
        pass  # never created
    if started:
        ray.shutdown()


@pytest.fixture(params=["memory", "actor", "redis"])
async def make_limiter(request: pytest.FixtureRequest) -> AsyncIterator[Callable[[Clock], Limiter]]:
    """Limiters over one store of the given kind; every call is another 'replica' of it."""
    limiters: list[Limiter] = []
    memory = MemoryStore()

    def make(clock: Clock) -> Limiter:
        if request.param == "memory":
            store = memory
        elif request.param == "actor":
            store = ActorStore(request.getfixturevalue("limiter_actor"), timeout_s=30)
        else:
            store = RedisStore(request.getfixturevalue("redis_url"), prefix=prefix)
        limiters.append(Limiter(store, clock=clock))
        return limiters[-1]

    prefix = f"foundry:rl:test-{uuid.uuid4().hex[:8]}:"
    if request.param == "actor":
        request.getfixturevalue("limiter_actor")
    if request.param == "redis":
        request.getfixturevalue("redis_url")
    yield make
    for limiter in limiters:
        await limiter.close()


def api_key(**limits) -> ApiKeyInfo:
    return ApiKeyInfo(key_id=f"key_{uuid.uuid4().hex[:8]}", project_id=f"proj_{uuid.uuid4().hex[:8]}", project="app",
                      **limits)  # fmt: skip


async def burst(limiter: Limiter, key: ApiKeyInfo, n: int, *, model: str = "m", tokens: int = 5) -> tuple[list, list]:
    results = await asyncio.gather(*(limiter.admit(key, model, tokens, 64) for _ in range(n)), return_exceptions=True)
    return [r for r in results if isinstance(r, Ticket)], [r for r in results if not isinstance(r, Ticket)]


# --- windows ---------------------------------------------------------------------------------


async def test_rpm_admits_exactly_the_limit_of_concurrent_requests(make_limiter) -> None:
    key = api_key(rpm=10)
    admitted, refused = await burst(make_limiter(Clock()), key, 15)
    assert len(admitted) == 10 and len(refused) == 5
    for err in refused:
        assert isinstance(err, RateLimited) and (err.status, err.code, err.type) == (
            429, "rate_limit_exceeded", "requests")  # fmt: skip
        assert err.retry_after_s > 0 and int(err.headers["retry-after"]) >= 1
        assert err.headers["x-ratelimit-limit-requests"] == "10"
        assert err.headers["x-ratelimit-remaining-requests"] == "0"
    assert sorted(int(t.headers["x-ratelimit-remaining-requests"]) for t in admitted) == list(range(10))


async def test_two_replicas_share_the_limit(make_limiter) -> None:
    key = api_key(rpm=10)
    clock = Clock()
    a, b = make_limiter(clock), make_limiter(clock)
    results = await asyncio.gather(burst(a, key, 8), burst(b, key, 8))
    assert sum(len(admitted) for admitted, _ in results) == 10
    assert sum(len(refused) for _, refused in results) == 6


async def test_the_window_slides_by_the_injected_clock(make_limiter) -> None:
    clock = Clock()
    limiter = make_limiter(clock)
    key = api_key(rpm=3)
    first = await limiter.admit(key, "m", 1, 1)
    assert first.headers["x-ratelimit-reset-requests"] == "1m0s"
    clock.t = T0 + 20
    later = (await burst(limiter, key, 2))[0]
    assert sorted(t.headers["x-ratelimit-remaining-requests"] for t in later) == ["0", "1"]
    assert {t.headers["x-ratelimit-reset-requests"] for t in later} == {"40s"}  # until the first one leaves
    clock.t = T0 + 30
    with pytest.raises(RateLimited) as caught:
        await limiter.admit(key, "m", 1, 1)
    assert caught.value.retry_after_s == pytest.approx(30)
    assert caught.value.headers["retry-after"] == "30"
    clock.t = T0 + 59.999
    with pytest.raises(RateLimited):
        await limiter.admit(key, "m", 1, 1)
    clock.t = T0 + 60  # the first request leaves the window
    await limiter.admit(key, "m", 1, 1)
    with pytest.raises(RateLimited) as caught:
        await limiter.admit(key, "m", 1, 1)
    assert caught.value.retry_after_s == pytest.approx(20)
    clock.t = T0 + 80
    assert len((await burst(limiter, key, 3))[0]) == 2


async def test_tpm_reserves_the_prompt_estimate_and_settles_actual_usage(make_limiter) -> None:
    clock = Clock()
    limiter = make_limiter(clock)
    key = api_key(tpm=100)
    first = await limiter.admit(key, "m", 60, 500)
    assert (first.headers["x-ratelimit-limit-tokens"], first.headers["x-ratelimit-remaining-tokens"]) == ("100", "40")
    with pytest.raises(RateLimited) as caught:
        await limiter.admit(key, "m", 50, 500)
    assert caught.value.type == "tokens" and caught.value.retry_after_s == pytest.approx(60)

    clock.t = T0 + 1
    await limiter.settle(first, 10, 20, 0.0)  # 30 actual tokens replace the 60 reserved
    second = await limiter.admit(key, "m", 50, 500)
    assert second.headers["x-ratelimit-remaining-tokens"] == "20"
    with pytest.raises(RateLimited) as caught:
        await limiter.admit(key, "m", 30, 500)
    assert caught.value.retry_after_s == pytest.approx(60)  # the settled 30 count from T0 + 1

    with pytest.raises(RateLimited) as caught:
        await limiter.admit(key, "m", 101, 500)
    assert "Request too large" in caught.value.message


async def test_a_ticket_never_settled_expires_with_the_window(make_limiter) -> None:
    clock = Clock()
    limiter = make_limiter(clock)
    key = api_key(tpm=100)
    await limiter.admit(key, "m", 100, 1)  # its replica crashes: never settled
    with pytest.raises(RateLimited):
        await limiter.admit(key, "m", 1, 1)
    clock.t = T0 + 60
    ticket = await limiter.admit(key, "m", 100, 1)
    assert ticket.headers["x-ratelimit-remaining-tokens"] == "0"


async def test_settling_twice_counts_once(make_limiter) -> None:
    limiter = make_limiter(Clock())
    key = api_key(tpm=1000)
    ticket = await limiter.admit(key, "m", 10, 1)
    await limiter.settle(ticket, 100, 200, 0.0)
    await limiter.settle(ticket, 100, 200, 0.0)
    assert (await limiter.admit(key, "m", 0, 1)).headers["x-ratelimit-remaining-tokens"] == "700"


async def test_per_model_limits_are_independent_and_add_to_the_keys_own(make_limiter) -> None:
    limiter = make_limiter(Clock())
    key = api_key(rpm=5, model_limits=(ModelLimit("a", rpm=2), ModelLimit("b", rpm=3, tpm=1000)))
    admitted, refused = await burst(limiter, key, 3, model="a")
    assert len(admitted) == 2 and "model 'a'" in refused[0].message
    b = await limiter.admit(key, "b", 10, 1)
    assert b.headers["x-ratelimit-remaining-requests"] == "2"  # the model's 3 less 1; the key has 2 left too
    assert b.headers["x-ratelimit-remaining-tokens"] == "990"
    await burst(limiter, key, 2, model="c")  # no model limit; the key's rpm is now used up
    with pytest.raises(RateLimited) as caught:
        await limiter.admit(key, "b", 1, 1)
    assert f"API key {key.key_id}:" in caught.value.message  # the key's own limit, not the model's


# --- budgets ---------------------------------------------------------------------------------


async def test_a_token_budget_runs_out_until_the_day_rolls(make_limiter) -> None:
    clock = Clock()
    limiter = make_limiter(clock)
    key = api_key(budget=Budget(tokens=100, period="day"))
    await limiter.settle(await limiter.admit(key, "m", 30, 100), 30, 50, 0.0)
    await limiter.settle(await limiter.admit(key, "m", 20, 100), 20, 0, 0.0)
    with pytest.raises(QuotaExceeded) as caught:
        await limiter.admit(key, "m", 1, 100)
    assert (caught.value.status, caught.value.code, caught.value.type) == (
        429, "insufficient_quota", "insufficient_quota")  # fmt: skip
    assert caught.value.retry_after_s == pytest.approx(3600)
    assert caught.value.headers["retry-after"] == "3600"
    clock.t = T0 + 3599
    with pytest.raises(QuotaExceeded):
        await limiter.admit(key, "m", 1, 100)
    clock.t = T0 + 3600  # midnight UTC: a new day
    await limiter.admit(key, "m", 100, 100)


async def test_a_usd_budget_runs_out_until_the_month_rolls(make_limiter) -> None:
    clock = Clock()
    limiter = make_limiter(clock)
    key = api_key(budget=Budget(usd=1.0, period="month"))
    await limiter.settle(await limiter.admit(key, "m", 10, 10), 10, 10, 0.6)
    await limiter.settle(await limiter.admit(key, "m", 10, 10), 10, 10, 0.5)
    with pytest.raises(QuotaExceeded) as caught:
        await limiter.admit(key, "m", 10, 10)
    assert "$1.1000 of $1" in caught.value.message and "2030-02-01T00:00:00Z" in caught.value.message
    clock.t = calendar.timegm((2030, 2, 1, 0, 0, 0))
    await limiter.admit(key, "m", 10, 10)


async def test_a_project_budget_is_shared_by_its_keys(make_limiter) -> None:
    limiter = make_limiter(Clock())
    budget = Budget(tokens=100, period="month")
    one = ApiKeyInfo(key_id=f"key_{uuid.uuid4().hex[:8]}", project_id="proj_shared_" + uuid.uuid4().hex[:6],
                     project="team", project_budget=budget)  # fmt: skip
    two = ApiKeyInfo(key_id=f"key_{uuid.uuid4().hex[:8]}", project_id=one.project_id, project="team",
                     project_budget=budget)  # fmt: skip
    await limiter.settle(await limiter.admit(one, "m", 50, 1), 60, 40, 0.0)
    with pytest.raises(QuotaExceeded) as caught:
        await limiter.admit(two, "m", 1, 1)
    assert "project 'team'" in caught.value.message


async def test_budget_reservations_are_exact_under_concurrency(make_limiter) -> None:
    limiter = make_limiter(Clock())
    key = api_key(budget=Budget(tokens=100))
    admitted, refused = await burst(limiter, key, 15, tokens=10)
    assert len(admitted) == 10 and len(refused) == 5
    assert all(isinstance(e, QuotaExceeded) and e.retry_after_s == 1.0 for e in refused)  # held by requests in flight
    for ticket in admitted[:5]:
        await limiter.settle(ticket, 5, 0, 0.0)  # they used 5 of the 10 they reserved: 25 free
    assert len((await burst(limiter, key, 6, tokens=10))[0]) == 2


# --- store specifics -------------------------------------------------------------------------


async def test_redis_is_exact_across_two_processes(redis_url: str) -> None:
    """Two gateway replicas: separate processes, event loops and connections, one Redis."""
    prefix = f"foundry:rl:test-{uuid.uuid4().hex[:8]}:"
    key_id = f"key_{uuid.uuid4().hex[:8]}"
    code = """
import asyncio, json, sys
from serve.auth import ApiKeyInfo
from serve.gateway.ratelimit import Limiter, RedisStore, Ticket
url, prefix, key_id = sys.argv[1:4]
async def main():
    limiter = Limiter(RedisStore(url, prefix=prefix, timeout_s=10))
    key = ApiKeyInfo(key_id=key_id, project_id="p", project="p", rpm=10)
    await limiter.admit(ApiKeyInfo(key_id="warm-" + key_id, project_id="p", project="p", rpm=99), "m", 1, 1)
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    results = await asyncio.gather(*(limiter.admit(key, "m", 1, 1) for _ in range(8)), return_exceptions=True)
    print(json.dumps(sum(isinstance(r, Ticket) for r in results)), flush=True)
    await limiter.close()
asyncio.run(main())
"""
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, redis_url, prefix, key_id,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        for _ in range(2)
    ]
    try:
        for proc in procs:
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert line == b"ready\n", (line, await proc.stderr.read())
        for proc in procs:
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        outputs = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), 60)
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()[-2000:]
    assert sum(json.loads(out) for out, _ in outputs) == 10


async def test_every_redis_key_expires(redis_url: str) -> None:
    prefix = f"foundry:rl:test-{uuid.uuid4().hex[:8]}:"
    limiter = Limiter(RedisStore(redis_url, prefix=prefix), clock=Clock())
    key = api_key(rpm=5, tpm=500, model_limits=(ModelLimit("m", rpm=5),), budget=Budget(tokens=1000, usd=5.0),
                  project_budget=Budget(tokens=1000, period="day"))  # fmt: skip
    for _ in range(3):
        await limiter.settle(await limiter.admit(key, "m", 10, 10), 10, 10, 0.01)
    client = aioredis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        names = [k async for k in client.scan_iter(match=prefix + "*")]
        ttls = {name.decode(): await client.pttl(name) for name in names}
    finally:
        await client.aclose()
        await limiter.close()
    assert any(":used:" in name for name in ttls) and any(":log:" in name for name in ttls)
    assert all(ttl > 0 for ttl in ttls.values()), ttls
    day = [ttl for name, ttl in ttls.items() if ":used:project:" in name]
    assert day and all(ttl <= (3600 + 86_400) * 1000 for ttl in day)  # the day ends at T0 + 1h, plus a day's grace


async def test_redis_recovers_from_a_flushed_script_cache_and_an_evicted_total(redis_url: str) -> None:
    prefix = f"foundry:rl:test-{uuid.uuid4().hex[:8]}:"
    limiter = Limiter(RedisStore(redis_url, prefix=prefix), clock=Clock())
    client = aioredis.Redis.from_url(redis_url, socket_timeout=5)
    key = api_key(rpm=5)
    try:
        await burst(limiter, key, 3)
        await client.script_flush()  # as after a restart or a failover
        await client.delete(f"{prefix}sum:key:{key.key_id}:rpm")  # as under maxmemory eviction
        ticket = await limiter.admit(key, "m", 1, 1)
        assert ticket.headers["x-ratelimit-remaining-requests"] == "1"  # the total was rebuilt: 4 of 5 used
    finally:
        await client.aclose()
        await limiter.close()


async def test_redis_down_refuses_limited_keys_but_not_unlimited_ones() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"redis://127.0.0.1:{s.getsockname()[1]}/0"
    limiter = build_limiter(LimitsConfig(redis_url=closed))
    try:
        with pytest.raises(LimitsUnavailable):
            await limiter.admit(api_key(rpm=5), "m", 1, 1)
        ticket = await limiter.admit(api_key(), "m", 1, 1)
        await limiter.settle(ticket, 1, 1, 0.0)
    finally:
        await limiter.close()


async def test_a_redis_that_never_answers_times_out_as_503() -> None:
    """A network partition: the TCP connection opens, no reply ever comes."""
    connections: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    limiter = Limiter(RedisStore(f"redis://127.0.0.1:{port}/0", timeout_s=0.2))
    try:
        with pytest.raises(LimitsUnavailable):
            await asyncio.wait_for(limiter.admit(api_key(rpm=5), "m", 1, 1), 10)
        ticket = await limiter.admit(api_key(), "m", 1, 1)
        await limiter.settle(ticket, 1, 1, 0.0)
    finally:
        await limiter.close()
        for writer in connections:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_build_limiter_without_redis_uses_the_named_actor(limiter_actor: str) -> None:
    limiter = build_limiter(LimitsConfig())
    try:
        key = api_key(rpm=2)
        assert len((await burst(limiter, key, 3))[0]) == 2
        assert ray.get_actor("foundry-limiter") is not None
    finally:
        await limiter.close()
        ray.kill(ray.get_actor("foundry-limiter"))
