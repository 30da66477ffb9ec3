"""The limiter on the in-process store: what a key's limits mean, the headers and errors it
gives, and what happens when its store fails. The same algorithm on every store (memory, Ray
actor, Redis) is checked by tests/integration/serve/test_ratelimit_stores.py."""

from __future__ import annotations

import asyncio
import calendar
import logging
import uuid

import orjson
import pytest

from serve.auth import ApiKeyInfo, Budget, MemberLimits, ModelLimit
from serve.gateway.errors import LimitsUnavailable, QuotaExceeded, RateLimited
from serve.gateway.ratelimit import Counter, CounterState, Limiter, MemoryStore, Ticket, duration, period_bounds

T0 = float(calendar.timegm((2030, 3, 14, 12, 0, 0)))


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class BrokenStore:
    """A LimitStore whose backend is down: every call fails as a real store reports it."""

    def __init__(self) -> None:
        self.calls = 0

    async def reserve(self, ticket_id: str, counters, now: float):
        self.calls += 1
        raise LimitsUnavailable("Redis is unavailable for rate limits.")

    async def settle(self, ticket_id: str, settlements, now: float) -> None:
        self.calls += 1
        raise LimitsUnavailable("Redis is unavailable for rate limits.")

    async def start(self) -> None:
        self.calls += 1
        raise LimitsUnavailable("Redis is unavailable for rate limits.")

    async def close(self) -> None:
        pass


def api_key(**limits) -> ApiKeyInfo:
    return ApiKeyInfo(key_id=f"key_{uuid.uuid4().hex[:8]}", project_id="proj_1", project="app", **limits)


async def burst(limiter: Limiter, key: ApiKeyInfo, n: int, model: str = "m", tokens: int = 5) -> tuple[list, list]:
    results = await asyncio.gather(*(limiter.admit(key, model, tokens, 64) for _ in range(n)), return_exceptions=True)
    return [r for r in results if isinstance(r, Ticket)], [r for r in results if not isinstance(r, Ticket)]


async def test_rpm_10_lets_exactly_10_of_15_concurrent_requests_through() -> None:
    limiter = Limiter(MemoryStore(), clock=Clock())
    admitted, refused = await burst(limiter, api_key(rpm=10), 15)
    assert len(admitted) == 10 and len(refused) == 5
    for err in refused:
        assert isinstance(err, RateLimited) and err.status == 429
        assert err.retry_after_s == pytest.approx(60.0)
        assert err.headers["retry-after"] == "60" and err.headers["x-ratelimit-remaining-requests"] == "0"
    assert sorted(int(t.headers["x-ratelimit-remaining-requests"]) for t in admitted) == list(range(10))


async def test_keys_without_limits_never_reach_the_store() -> None:
    store = BrokenStore()
    limiter = Limiter(store, clock=Clock())
    ticket = await limiter.admit(api_key(), "m", 100, 100)
    assert ticket.headers == {}
    await limiter.settle(ticket, 100, 100, 1.0)
    # limits on other models only: nothing applies to this one either
    other = api_key(model_limits=(ModelLimit("other", rpm=1),))
    await limiter.settle(await limiter.admit(other, "m", 1, 1), 1, 1, 0.0)
    assert store.calls == 0


async def test_a_store_that_fails_refuses_limited_keys_with_503_and_settle_only_logs(caplog) -> None:
    store = BrokenStore()
    limiter = Limiter(store, clock=Clock())
    with caplog.at_level(logging.WARNING, logger="serve.gateway.ratelimit"):
        await limiter.start()  # the gateway still starts
    assert "unavailable at start-up" in caplog.text
    with pytest.raises(LimitsUnavailable) as caught:
        await limiter.admit(api_key(budget=Budget(tokens=10)), "m", 1, 1)
    assert caught.value.status == 503 and caught.value.code == "limits_unavailable"

    ok = await Limiter(MemoryStore(), clock=Clock()).admit(api_key(tpm=100), "m", 1, 1)
    with caplog.at_level(logging.WARNING, logger="serve.gateway.ratelimit"):
        await limiter.settle(ok, 1, 1, 0.0)  # the ticket's store is down: no exception
    assert "could not settle" in caplog.text


async def test_settling_twice_counts_once_and_failed_requests_count_their_prompt() -> None:
    limiter = Limiter(MemoryStore(), clock=Clock())
    key = api_key(tpm=1000)
    ticket = await limiter.admit(key, "m", 10, 100)
    await limiter.settle(ticket, 100, 200, 0.0)
    await limiter.settle(ticket, 100, 200, 0.0)
    failed = await limiter.admit(key, "m", 50, 100)
    await limiter.settle(failed, 50, 0, 0.0)  # the upstream failed before any completion token
    after = await limiter.admit(key, "m", 0, 100)
    assert after.headers["x-ratelimit-remaining-tokens"] == str(1000 - 300 - 50)


async def test_error_bodies_use_openai_codes() -> None:
    limiter = Limiter(MemoryStore(), clock=Clock())
    key = api_key(tpm=100, budget=Budget(usd=1.0))
    with pytest.raises(RateLimited) as rate:
        await limiter.admit(key, "m", 101, 1)
    body = rate.value.body()["error"]
    assert (body["type"], body["code"]) == ("tokens", "rate_limit_exceeded")
    assert "Request too large" in body["message"] and "limit 100, requested 101" in body["message"]

    ticket = await limiter.admit(key, "m", 10, 1)
    await limiter.settle(ticket, 10, 10, 1.25)
    with pytest.raises(QuotaExceeded) as quota:
        await limiter.admit(key, "m", 10, 1)
    body = quota.value.body()["error"]
    assert (quota.value.status, body["type"], body["code"]) == (429, "insufficient_quota", "insufficient_quota")
    assert "$1.2500 of $1 used" in body["message"] and "2030-04-01T00:00:00Z" in body["message"]
    assert key.key_id in body["message"]


async def test_quota_wins_over_a_rate_limit_when_both_apply() -> None:
    limiter = Limiter(MemoryStore(), clock=Clock())
    key = api_key(rpm=1, budget=Budget(tokens=10, period="day"))
    await limiter.settle(await limiter.admit(key, "m", 10, 1), 10, 0, 0.0)
    with pytest.raises(QuotaExceeded) as caught:
        await limiter.admit(key, "m", 1, 1)
    assert caught.value.retry_after_s == pytest.approx(12 * 3600)  # until midnight UTC
    assert caught.value.headers["retry-after"] == str(12 * 3600)
    assert caught.value.headers["x-ratelimit-remaining-requests"] == "0"


async def test_idle_counters_are_dropped() -> None:
    clock = Clock()
    store = MemoryStore()
    limiter = Limiter(store, clock=clock)
    for _ in range(50):
        await limiter.admit(api_key(rpm=5, tpm=500), "m", 1, 1)
    assert store.size() == 100
    clock.t += 61
    await limiter.admit(api_key(rpm=5), "m", 1, 1)
    assert store.size() == 1


async def test_memory_store_checks_all_counters_before_reserving_any() -> None:
    store = MemoryStore()
    roomy, full = Counter("a", 10, 1, 60), Counter("b", 1, 1, 60)
    assert (await store.reserve("t1", [full], T0))[0]
    admitted, states = await store.reserve("t2", [roomy, full], T0)
    assert not admitted
    assert states == [CounterState(0, 0, 0), CounterState(1, 60, 60)]  # nothing went into "a"


@pytest.mark.parametrize(
    ("period", "when", "expected"),
    [
        ("day", (2030, 3, 14, 23, 59, 59), ("2030-03-14", (2030, 3, 15))),
        ("day", (2028, 2, 28, 0, 0, 0), ("2028-02-28", (2028, 2, 29))),
        ("month", (2030, 12, 31, 23, 0, 0), ("2030-12", (2031, 1, 1))),
        ("month", (2030, 1, 1, 0, 0, 0), ("2030-01", (2030, 2, 1))),
    ],
)
def test_periods_are_utc_calendar_days_and_months(period, when, expected) -> None:
    name, (y, m, d) = expected
    assert period_bounds(period, calendar.timegm(when)) == (name, calendar.timegm((y, m, d, 0, 0, 0)))


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0ms"), (0.0004, "1ms"), (0.25, "250ms"), (1.5, "1.5s"), (59.9999, "1m0s"), (60, "1m0s"), (75.25, "1m15.25s")],
)
def test_reset_durations_read_like_openais(seconds: float, text: str) -> None:
    assert duration(seconds) == text


# --- a member's limits, shared by its keys ----------------------------------------------------


def member_keys(n: int, **limits) -> list[ApiKeyInfo]:
    """``n`` keys of one owner in one project, each with the owner's member limits."""
    member = MemberLimits(id="proj_1:usr_1", label="member mira@example.com of project 'app'", **limits)
    return [api_key(member=member) for _ in range(n)]


async def test_a_members_budget_is_shared_by_its_keys() -> None:
    limiter = Limiter(MemoryStore(), clock=Clock())
    first, second = member_keys(2, budget=Budget(usd=1.0))
    assert first.limited and first.key_id != second.key_id
    await limiter.settle(await limiter.admit(first, "m", 10, 10), 10, 10, 0.6)
    await limiter.settle(await limiter.admit(second, "m", 10, 10), 10, 10, 0.6)  # $0.6 < $1: admitted
    for key in (first, second, *member_keys(1, budget=Budget(usd=1.0))):  # a third key does not help
        with pytest.raises(QuotaExceeded) as quota:
            await limiter.admit(key, "m", 10, 10)
        body = quota.value.body()["error"]
        assert (quota.value.status, body["code"]) == (429, "insufficient_quota")
        assert "member mira@example.com of project 'app'" in body["message"] and "$1.2000 of $1" in body["message"]
    other = MemberLimits(id="proj_1:usr_2", label="member otto", budget=Budget(usd=1.0))
    await limiter.admit(api_key(member=other), "m", 10, 10)  # another member's budget is its own


async def test_the_tighter_of_key_and_member_rate_limits_admits() -> None:
    limiter = Limiter(MemoryStore(), clock=Clock())
    first, second = member_keys(2, rpm=5)
    tight = ApiKeyInfo(**{**{f: getattr(first, f) for f in ("key_id", "project_id", "project", "member")}, "rpm": 2})
    admitted, refused = await burst(limiter, tight, 4)
    assert (len(admitted), len(refused)) == (2, 2)  # the key's own rpm 2 < the member's 5
    assert "API key" in str(refused[0])
    admitted, refused = await burst(limiter, second, 5)
    assert (len(admitted), len(refused)) == (3, 2)  # the member's 5 per minute across both keys
    assert isinstance(refused[0], RateLimited) and "member mira@example.com" in str(refused[0])


async def test_members_without_limits_cost_no_store_round_trip() -> None:
    store = BrokenStore()
    [key] = member_keys(1)
    assert not key.limited
    await Limiter(store).admit(key, "m", 10, 10)
    assert store.calls == 0
