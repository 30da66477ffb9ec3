"""Rate limits and budgets of API keys: admit before a request, settle after it.

    Limiter                 what a key's limits mean: counters, headers, errors (this module)
      └── LimitStore        where the counters live; checks and reserves in one atomic step
                            (serve.gateway._ratelimit_stores, Lua in _ratelimit_lua)
           ├── MemoryStore  this process only: unit tests, and the state inside ActorStore
           ├── ActorStore   one named Ray actor holding a MemoryStore: the embedded default,
           │                exact across the gateway replicas of one Ray cluster
           └── RedisStore   Valkey/Redis, one Lua script per call: exact across processes,
                            replicas and hosts sharing the server (not Redis Cluster)

What a request counts against, for a key and a model:

- ``rpm``/``tpm`` of the key and of the key on that model (``ApiKeyInfo.model_limits``): sliding
  windows of 60 s. A request counts 1 against rpm from its admission, whatever happens to it.
  Against tpm it reserves its prompt estimate at admission; settlement replaces the reservation
  with the actual prompt + completion tokens, counted from the time of settlement.
- ``rpm``/``tpm`` of the key's owner in the key's project (``ApiKeyInfo.member``): the same
  windows, shared by every key the owner holds there.
- token and USD budgets of the key, of its owner in the project (shared by the owner's keys
  there) and of its project, per calendar day or month (UTC).
  Admission reserves the prompt estimate (and ``cost_estimate_usd``); settlement replaces it with
  actual usage, charged to the period the request was admitted in.

A limit admits a request when ``used < limit`` and ``used + cost <= limit``, where ``used``
counts every live entry, reservations included. Every counter of a request is checked and
reserved in one atomic step: all take the request or none does. Over a window →
:class:`RateLimited`; over a budget → :class:`QuotaExceeded` (which wins when both apply).

Exactness: the windows are logs, not approximations. Each entry is kept with its timestamp and
leaves the window exactly ``WINDOW_S`` after it (an entry at ``t`` counts while ``now - t <
WINDOW_S``); a running total per window makes a check O(log n + entries expired since the last
call) instead of a scan. So rpm=10 admits exactly 10 of 15 concurrent requests, on every store.
A ticket never settled (a crashed replica) leaves the tpm window with its entry, and budgets
after ``RESERVATION_TTL_S``.

Failure policy: fail closed. When the store does not answer within its timeout, admitting a
*limited* key raises :class:`LimitsUnavailable` (503, retryable) instead of serving the request
unmetered: an overrun budget cannot be taken back, and a 503 is visible and retried by clients,
while failing open would hide the outage until the bill comes. Keys without limits never touch
the store, so an outage only affects limited keys. :meth:`Limiter.settle` never raises for store
failures (the response is already decided): it logs, and the reservation expires on its own.

The embedded ActorStore keeps counters in memory: they survive gateway redeploys (the actor is
detached) but not a restart of the Ray cluster. Budgets that must survive that need Redis with
persistence.

Example::

    limiter = build_limiter(LimitsConfig(redis_url="redis://127.0.0.1:6379/0"))  # in the lifespan
    await limiter.start()
    ticket = await limiter.admit(key, "chat-main", prompt_tokens_estimate=120, max_tokens=256)
    response_headers.update(ticket.headers)
    ...
    await limiter.settle(ticket, prompt_tokens=118, completion_tokens=200, cost_usd=0.0021)
"""

from __future__ import annotations

import calendar
import itertools
import logging
import math
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Literal

from serve.auth import ApiKeyInfo, Budget
from serve.config import LimitsConfig
from serve.gateway._ratelimit_stores import (
    NEVER,
    WINDOW_S,
    ActorStore,
    Counter,
    CounterState,
    LimitStore,
    MemoryStore,
    RedisStore,
    fits,
)
from serve.gateway.errors import LimitsUnavailable, QuotaExceeded, RateLimited

__all__ = [
    "ActorStore",
    "Counter",
    "CounterState",
    "LimitStore",
    "Limiter",
    "MemoryStore",
    "RedisStore",
    "Ticket",
    "build_limiter",
    "duration",
    "period_bounds",
]

log = logging.getLogger(__name__)

RESERVATION_TTL_S = 900.0  # a budget reservation of a ticket never settled lapses after this
PERIOD_GRACE_S = 86_400.0  # settled budget totals outlive their period by this (late settlements)

Kind = Literal["requests", "tokens", "budget_tokens", "budget_usd"]
_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


# --- the limiter -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Check:
    counter: Counter
    kind: Kind
    scope: str  # for messages: "API key key_x", "project 'p'", ...
    period: str = ""  # budgets: "day" / "month"
    period_end: float = 0.0


@dataclass(slots=True)
class Ticket:
    """An admitted request. Send ``headers`` with the response; pass the ticket to
    :meth:`Limiter.settle` once the usage is known (a second settle is a no-op)."""

    id: str
    key_id: str
    project_id: str
    model: str
    admitted_at: float  # unix seconds, by the limiter's clock
    prompt_tokens_estimate: int
    max_tokens: int
    cost_estimate_usd: float
    headers: Mapping[str, str]  # x-ratelimit-*; empty for a key without rpm/tpm limits
    checks: tuple[_Check, ...] = field(default=(), repr=False)  # what was reserved
    settled: bool = False


class Limiter:
    """Checks and reserves a key's limits before a request, and settles its usage after.

    ``clock`` (unix seconds) is injected so tests can move time; every replica sharing a store
    must have roughly the same clock (NTP), as entries carry the admitting replica's time.
    Stores time out their own calls and report failures as :class:`LimitsUnavailable`.
    """

    def __init__(self, store: LimitStore, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._prefix = secrets.token_hex(6)  # ticket ids are unique across processes
        self._ids = itertools.count()

    async def admit(
        self,
        key: ApiKeyInfo,
        model: str,
        prompt_tokens_estimate: int,
        max_tokens: int,
        *,
        cost_estimate_usd: float = 0.0,
    ) -> Ticket:
        """Reserve the request against every limit of ``key`` on ``model``, or raise.

        ``max_tokens`` is recorded on the ticket but not reserved: completion tokens are counted
        at settlement (reserving the cap would refuse requests that fit). Raises
        :class:`RateLimited`, :class:`QuotaExceeded` (both 429 with headers) or
        :class:`LimitsUnavailable` (503).
        """
        if not key.limited:  # the hot path: no store round trip
            return _ticket("", key, model, self._clock(), prompt_tokens_estimate, max_tokens, cost_estimate_usd)
        now = self._clock()
        checks = _checks(key, model, max(0, prompt_tokens_estimate), max(0.0, cost_estimate_usd), now)
        if not checks:  # only limits on other models
            return _ticket("", key, model, now, prompt_tokens_estimate, max_tokens, cost_estimate_usd)
        ticket_id = f"{self._prefix}{next(self._ids):x}"
        admitted, states = await self._store.reserve(ticket_id, [c.counter for c in checks], now)
        if not admitted:
            raise _refusal(checks, states, now)
        return _ticket(
            ticket_id, key, model, now, prompt_tokens_estimate, max_tokens, cost_estimate_usd,
            headers=_headers(checks, states, admitted=True), checks=tuple(checks),
        )  # fmt: skip

    async def settle(self, ticket: Ticket, prompt_tokens: int, completion_tokens: int, cost_usd: float) -> None:
        """Replace the ticket's reservations with actual usage; also for failed requests (with
        the tokens actually spent, often 0 completion tokens). Never raises for store failures."""
        if ticket.settled:
            return
        ticket.settled = True
        tokens = float(max(0, prompt_tokens) + max(0, completion_tokens))
        settlements = [
            (check.counter, max(0.0, cost_usd) if check.kind == "budget_usd" else tokens)
            for check in ticket.checks
            if check.kind != "requests"  # a request counts 1 whatever happened to it
        ]
        if not settlements:
            return
        try:
            await self._store.settle(ticket.id, settlements, self._clock())
        except LimitsUnavailable as exc:
            log.warning("could not settle usage of key %s (its reservation will lapse): %s", ticket.key_id, exc)

    async def start(self) -> None:
        """Warm the store up (connect to Redis, start or find the actor). A store that is down
        is logged, not raised: keys without limits work regardless, limited ones get 503."""
        try:
            await self._store.start()
        except LimitsUnavailable as exc:
            log.warning("rate-limit store unavailable at start-up: %s", exc)

    async def close(self) -> None:
        await self._store.close()


def _ticket(
    ticket_id: str,
    key: ApiKeyInfo,
    model: str,
    now: float,
    prompt_tokens_estimate: int,
    max_tokens: int,
    cost_estimate_usd: float,
    *,
    headers: Mapping[str, str] = _NO_HEADERS,
    checks: tuple[_Check, ...] = (),
) -> Ticket:
    return Ticket(
        id=ticket_id,
        key_id=key.key_id,
        project_id=key.project_id,
        model=model,
        admitted_at=now,
        prompt_tokens_estimate=prompt_tokens_estimate,
        max_tokens=max_tokens,
        cost_estimate_usd=cost_estimate_usd,
        headers=headers,
        checks=checks,
    )


def build_limiter(config: LimitsConfig, *, clock: Callable[[], float] = time.time) -> Limiter:
    """The limiter ``config`` asks for: Redis with ``redis_url``, else the embedded Ray actor.

    Call it in the replica (the gateway's lifespan); connections and the actor handle are made
    on first use.
    """
    store: LimitStore
    if config.redis_url:
        store = RedisStore(config.redis_url)
    else:
        store = ActorStore(num_cpus=config.num_cpus)
    return Limiter(store, clock=clock)


def _checks(key: ApiKeyInfo, model: str, tokens: int, usd: float, now: float) -> list[_Check]:
    kid = key.key_id
    checks: list[_Check] = []
    scope = f"API key {kid}"
    if key.rpm is not None:
        checks.append(_Check(Counter(f"key:{kid}:rpm", key.rpm, 1, WINDOW_S), "requests", scope))
    if key.tpm is not None:
        checks.append(_Check(Counter(f"key:{kid}:tpm", key.tpm, tokens, WINDOW_S), "tokens", scope))
    limit = key.model_limit(model)
    if limit is not None:
        scope = f"API key {kid} on model '{model}'"
        # the model name goes last: names stay unambiguous whatever characters it holds
        if limit.rpm is not None:
            checks.append(_Check(Counter(f"key:{kid}:rpm:model:{model}", limit.rpm, 1, WINDOW_S), "requests", scope))
        if limit.tpm is not None:
            checks.append(_Check(Counter(f"key:{kid}:tpm:model:{model}", limit.tpm, tokens, WINDOW_S), "tokens", scope))
    member = key.member
    if member is not None:  # the owner's limits in the project, shared by all its keys there
        if member.rpm is not None:
            checks.append(_Check(Counter(f"member:{member.id}:rpm", member.rpm, 1, WINDOW_S), "requests", member.label))
        if member.tpm is not None:
            counter = Counter(f"member:{member.id}:tpm", member.tpm, tokens, WINDOW_S)
            checks.append(_Check(counter, "tokens", member.label))
    for owner, budget, scope in (
        (f"key:{kid}", key.budget, f"API key {kid}"),
        (f"member:{member.id}", member.budget, member.label) if member is not None else ("", None, ""),
        (f"project:{key.project_id}", key.project_budget, f"project '{key.project}'"),
    ):
        if budget is not None:
            checks.extend(_budget_checks(owner, budget, scope, tokens, usd, now))
    return checks


def _budget_checks(owner: str, budget: Budget, scope: str, tokens: int, usd: float, now: float) -> list[_Check]:
    period_id, end = period_bounds(budget.period, now)
    until = end + PERIOD_GRACE_S
    checks = []
    if budget.tokens is not None:
        counter = Counter(f"{owner}:budget-tokens:{period_id}", budget.tokens, tokens, RESERVATION_TTL_S, until)
        checks.append(_Check(counter, "budget_tokens", scope, budget.period, end))
    if budget.usd is not None:
        counter = Counter(f"{owner}:budget-usd:{period_id}", budget.usd, usd, RESERVATION_TTL_S, until)
        checks.append(_Check(counter, "budget_usd", scope, budget.period, end))
    return checks


def period_bounds(period: Literal["day", "month"], now: float) -> tuple[str, float]:
    """The id of the calendar period (UTC) holding ``now`` and the unix time it ends.

    >>> period_bounds("month", 1738367999.0)  # 2025-01-31T23:59:59Z
    ('2025-01', 1738368000)
    """
    t = time.gmtime(now)
    if period == "day":
        start = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0))
        return f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}", start + 86_400
    year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    return f"{t.tm_year:04d}-{t.tm_mon:02d}", calendar.timegm((year, month, 1, 0, 0, 0))


def _headers(checks: Sequence[_Check], states: Sequence[CounterState], *, admitted: bool) -> dict[str, str]:
    """``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` of the tightest window of each
    kind (the one with the least remaining). ``reset``: until its oldest entry leaves."""
    headers: dict[str, str] = {}
    for kind in ("requests", "tokens"):
        tightest: tuple[float, float, float] | None = None
        for check, state in zip(checks, states, strict=True):
            if check.kind != kind:
                continue
            used = state.used + (check.counter.cost if admitted else 0)
            remaining = max(0.0, check.counter.limit - used)
            if tightest is None or remaining < tightest[1]:
                tightest = (check.counter.limit, remaining, state.reset_s)
        if tightest is not None:
            limit, remaining, reset_s = tightest
            headers[f"x-ratelimit-limit-{kind}"] = str(int(limit))
            headers[f"x-ratelimit-remaining-{kind}"] = str(int(remaining))
            headers[f"x-ratelimit-reset-{kind}"] = duration(reset_s)
    return headers


def duration(seconds: float) -> str:
    """A reset time as OpenAI writes it: ``"250ms"``, ``"1.5s"``, ``"1m0s"``.

    >>> duration(0.25), duration(1.5), duration(60)
    ('250ms', '1.5s', '1m0s')
    """
    ms = math.ceil(max(0.0, seconds) * 1000)  # rounded up: never earlier than the truth
    if ms < 1000:
        return f"{ms}ms"
    minutes, rest = divmod(ms, 60_000)
    text = f"{rest / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{minutes}m{text}" if minutes else text


def _refusal(
    checks: Sequence[_Check], states: Sequence[CounterState], now: float
) -> RateLimited | QuotaExceeded | LimitsUnavailable:
    headers = _headers(checks, states, admitted=False)
    over = [(c, s) for c, s in zip(checks, states, strict=True) if not fits(s.used, c.counter.cost, c.counter.limit)]
    if not over:  # the store refused, yet every counter fits by our reading: say so, retryably
        return LimitsUnavailable("Rate limits cannot be checked right now; please retry shortly.")
    budgets = [(c, s) for c, s in over if c.kind.startswith("budget")]
    if budgets:
        waits = []
        for check, state in budgets:
            # spent for the period → until it ends; held only by requests in flight → soon
            waits.append(check.period_end - now if state.wait_s == NEVER else min(state.wait_s, 1.0))
        retry_after = max(waits)
        check, state = budgets[waits.index(retry_after)]
        error: RateLimited | QuotaExceeded = QuotaExceeded(
            _quota_message(check, state), retry_after_s=retry_after, headers=headers
        )
    else:
        waits = [WINDOW_S if s.wait_s == NEVER else s.wait_s for _, s in over]
        retry_after = max(waits)
        check, state = over[waits.index(retry_after)]
        error = RateLimited(
            _rate_message(check, state, retry_after), retry_after_s=retry_after, headers=headers, kind=check.kind
        )
    headers["retry-after"] = str(max(1, math.ceil(retry_after)))
    headers["retry-after-ms"] = str(max(1, math.ceil(retry_after * 1000)))
    return error


def _rate_message(check: _Check, state: CounterState, retry_after: float) -> str:
    what = "requests per minute (RPM)" if check.kind == "requests" else "tokens per minute (TPM)"
    limit, cost = int(check.counter.limit), int(check.counter.cost)
    if check.counter.cost > check.counter.limit:
        return (
            f"Request too large for {what} of {check.scope}: limit {limit}, requested {cost}. "
            "Send fewer tokens, or ask for a higher limit."
        )
    return (
        f"Rate limit reached for {what} of {check.scope}: limit {limit}, used {int(state.used)}, "
        f"requested {cost}. Please try again in {duration(retry_after)}."
    )


def _quota_message(check: _Check, state: CounterState) -> str:
    renews = datetime.fromtimestamp(check.period_end, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    if check.kind == "budget_usd":
        spent = f"${state.used:.4f} of ${check.counter.limit:g}"
    else:
        spent = f"{int(state.used)} of {int(check.counter.limit)} tokens"
    return (
        f"You exceeded the {'daily' if check.period == 'day' else 'monthly'} budget of {check.scope}: "
        f"{spent} used or reserved. It renews at {renews}."
    )
