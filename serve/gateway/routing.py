"""Which provider answers a request: ranks, weights, fallbacks, retries, timeouts, breakers.

For a model the router builds the candidate list once per request: the model's providers rank
by rank (inside a rank, a weighted random order), then each ``fallback_models`` entry's
candidates, depth first, each model at most once (cycle-safe). Then:

- every candidate whose circuit breaker admits it gets one attempt per round, in order;
- a retryable failure (connect error, timeout, 408/409/429/5xx) moves on to the next candidate
  at once; when a round is over, the next round starts after exponential backoff with full
  jitter (``base_delay_s * 2**round``, capped by ``max_delay_s``), at most ``num_retries``
  more rounds, and never before a provider's ``Retry-After``;
- any other 4xx ends the request at once: the request is wrong, another provider would refuse
  it too;
- ``ttft_ms`` bounds the wait for the first delta of each attempt, ``total_ms`` the whole
  request (retries included) and, once a stream has started, the longest gap between deltas.

A streamed attempt that has produced its first delta is committed: later failures cannot be
retried (bytes went to the client). A non-streamed request asks each provider for the whole
answer as one JSON body (a model with ``ttft_ms``: the stream, collected, so that the first
token is timed); nothing is sent before it is complete, so any failure falls through to the
next candidate.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from serve.config import ModelConfig, PricingConfig
from serve.gateway.breaker import CircuitBreaker
from serve.gateway.errors import GatewayError, InvalidRequest, ModelNotFound, ProviderUnavailable, from_provider_error
from serve.providers.base import Provider, collect
from serve.providers.errors import (
    ProviderError,
    UnsupportedOperation,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamStatus,
    UpstreamTimeout,
)
from serve.runtimes.engine import GenerateRequest, TokenDelta


@dataclass(slots=True, eq=False)
class Slot:
    """One provider of one model, with its weight and breaker."""

    model: str
    provider: Provider
    weight: float = 1.0
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    pricing: PricingConfig = PricingConfig()  # of ``model``: what the request's cost is
    not_before: float = 0.0  # monotonic time before which Retry-After forbids another attempt


@dataclass(slots=True)
class ModelRoute:
    name: str
    ranks: list[list[Slot]]
    config: ModelConfig


@dataclass(slots=True)
class Outcome:
    """What happened, for the metrics row and the response headers."""

    attempts: int = 0
    provider: str = ""
    model_served: str = ""
    fallback_used: bool = False
    pricing: PricingConfig | None = None  # of the model that answered
    upstream_s: float = 0.0  # time spent waiting on providers (the rest is gateway overhead)


@dataclass(slots=True)
class Opened:
    """A committed stream: its first delta and the rest."""

    slot: Slot
    first: TokenDelta
    rest: AsyncIterator[TokenDelta]


class Router:
    """Runs a request on a route. ``routes`` is the one dict the request path reads: replaced
    whole, never edited in place (:class:`~serve.gateway.routetable.RouteTable`), so a request
    keeps the route and providers it started with; fallback models are looked up in it."""

    def __init__(
        self,
        routes: dict[str, ModelRoute],
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = asyncio.sleep,
    ) -> None:
        self.routes = routes
        self._rng = rng or random.Random()
        self._clock = clock
        self._sleep = sleep

    def route(self, model: str) -> ModelRoute:
        route = self.routes.get(model)
        if route is None:
            raise ModelNotFound(model)
        return route

    def candidates(self, route: ModelRoute) -> list[Slot]:
        out: list[Slot] = []
        seen: set[str] = set()
        routes = self.routes

        def visit(route: ModelRoute) -> None:
            seen.add(route.name)
            for rank in route.ranks:
                out.extend(self._weighted_order(rank))
            for fallback in route.config.fallback_models:
                if fallback not in seen and (other := routes.get(fallback)) is not None:
                    visit(other)

        visit(route)
        return out

    async def open_stream(self, route: ModelRoute, request: GenerateRequest, outcome: Outcome) -> Opened:
        """The first candidate that produces a first delta; its stream continues in ``rest``."""
        gap_s = route.config.timeouts.total_ms / 1000

        async def attempt(slot: Slot, deadline: float) -> Opened:
            gen = slot.provider.generate(request)
            first = await self._first(slot, gen, route, deadline)
            return Opened(slot, first, _gap_limited(gen, gap_s, slot.provider.name))

        return await self._run(route, attempt, outcome)

    async def complete(self, route: ModelRoute, request: GenerateRequest, outcome: Outcome) -> tuple[Slot, TokenDelta]:
        """The whole generation (one delta) from the first candidate that completes it: one
        JSON answer from the provider (:meth:`Provider.complete`), unless the model has a
        ``ttft_ms``, which only a stream can keep (then the stream, collected)."""
        streamed = route.config.timeouts.ttft_ms is not None

        async def attempt(slot: Slot, deadline: float) -> tuple[Slot, TokenDelta]:
            if streamed:
                gen = slot.provider.generate(request)
                first = await self._first(slot, gen, route, deadline)
                call = collect(slot.provider.name, _chain(first, gen))
            else:
                call = slot.provider.complete(request)
            try:
                async with asyncio.timeout(max(0.0, deadline - self._clock())):
                    return slot, await call
            except TimeoutError:
                raise UpstreamTimeout(slot.provider.name, "the request took longer than total_ms") from None

        return await self._run(route, attempt, outcome)

    async def embed(self, route: ModelRoute, texts: list[str], outcome: Outcome):

        async def attempt(slot: Slot, deadline: float):
            try:
                async with asyncio.timeout(max(0.0, deadline - self._clock())):
                    return slot, await slot.provider.embed(texts)
            except TimeoutError:
                raise UpstreamTimeout(slot.provider.name, "no answer within total_ms") from None

        return await self._run(route, attempt, outcome)

    # --- the loop ----------------------------------------------------------------------------

    async def _run(self, route: ModelRoute, attempt, outcome: Outcome):
        model = route.name
        retries = route.config.retries
        deadline = self._clock() + route.config.timeouts.total_ms / 1000
        candidates = self.candidates(route)
        last: ProviderError | None = None
        for round_no in range(retries.num_retries + 1):
            tried = False
            for slot in candidates:
                if slot.not_before > self._clock() or not slot.breaker.try_acquire():
                    continue
                tried = True
                outcome.attempts += 1
                t0 = self._clock()
                try:
                    result = await attempt(slot, deadline)
                except ProviderError as exc:
                    outcome.upstream_s += self._clock() - t0
                    last = exc
                    _score(slot, exc)
                    if isinstance(exc, UpstreamStatus) and exc.retry_after_s:
                        slot.not_before = self._clock() + exc.retry_after_s
                    if not exc.retryable:
                        raise from_provider_error(exc) from None
                    if self._clock() >= deadline:
                        raise from_provider_error(UpstreamTimeout(exc.provider, "total_ms elapsed")) from None
                    continue
                except BaseException:
                    slot.breaker.release()
                    raise
                outcome.upstream_s += self._clock() - t0
                slot.breaker.record_success()
                outcome.provider = slot.provider.name
                outcome.model_served = slot.model
                outcome.fallback_used = slot.model != model
                outcome.pricing = slot.pricing
                return result
            if round_no == retries.num_retries or (not tried and last is None):
                break  # out of rounds, or every circuit is open and nothing was tried: fail fast
            delay = self._backoff(round_no, retries.base_delay_s, retries.max_delay_s, candidates)
            if delay is None or self._clock() + delay >= deadline:
                break
            await self._sleep(delay)
        if last is None:
            wait = min((s.breaker.retry_after_s() for s in candidates), default=0.0)
            raise ProviderUnavailable(
                f"No provider for '{model}' is available (circuit open); retry in {wait:.0f} s.",
                code="circuit_open",
                retry_after_s=wait,
            )
        raise from_provider_error(last)

    async def _first(self, slot: Slot, gen: AsyncIterator[TokenDelta], route: ModelRoute, deadline: float) -> TokenDelta:
        ttft_ms = route.config.timeouts.ttft_ms
        budget = deadline - self._clock()
        limit = budget if ttft_ms is None else min(budget, ttft_ms / 1000)
        try:
            async with asyncio.timeout(max(0.0, limit)):
                return await anext(gen)
        except TimeoutError:
            await gen.aclose()
            raise UpstreamTimeout(slot.provider.name, f"no first token within {limit * 1000:.0f} ms") from None
        except StopAsyncIteration:
            raise UpstreamProtocolError(slot.provider.name, "the stream ended before any token") from None
        except BaseException:
            await gen.aclose()
            raise

    def _backoff(self, round_no: int, base_s: float, cap_s: float, candidates: list[Slot]) -> float | None:
        """Full jitter, capped; but at least until the earliest candidate's Retry-After passes."""
        delay = self._rng.uniform(0, min(cap_s, base_s * (2**round_no)))
        now = self._clock()
        earliest = min((s.not_before for s in candidates), default=now)
        wait = max(0.0, earliest - now)
        if wait > cap_s:
            return None  # nobody may be retried within the cap
        return max(delay, wait)

    def _weighted_order(self, rank: list[Slot]) -> list[Slot]:
        if len(rank) == 1:
            return rank
        # Efraimidis-Spirakis: weighted sampling without replacement
        keyed = [(self._rng.random() ** (1.0 / s.weight), s) for s in rank]
        keyed.sort(key=lambda t: t[0], reverse=True)
        return [s for _, s in keyed]


async def _chain(first: TokenDelta, rest: AsyncIterator[TokenDelta]) -> AsyncIterator[TokenDelta]:
    try:
        yield first
        async for delta in rest:
            yield delta
    finally:
        await rest.aclose()


async def _gap_limited(gen: AsyncIterator[TokenDelta], gap_s: float, provider: str) -> AsyncIterator[TokenDelta]:
    """``gen``, failing with :class:`UpstreamTimeout` when a wait for its next delta lasts
    ``gap_s``. One timer per stream, re-armed only when it fires early, rather than a timeout
    entered and left per delta (~20 us each, a stream has one per token)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    waiting_since: float | None = None  # set only while awaiting the next delta
    stalled = False

    def watch() -> None:
        nonlocal timer, stalled
        now = loop.time()
        if waiting_since is not None and now - waiting_since >= gap_s:
            stalled = True
            task.cancel()  # delivered at the await of the next delta, the only place waiting_since is set
        else:
            timer = loop.call_at((now if waiting_since is None else waiting_since) + gap_s, watch)

    timer = loop.call_at(loop.time() + gap_s, watch)
    try:
        while True:
            waiting_since = loop.time()
            try:
                delta = await anext(gen)
            except StopAsyncIteration:
                return
            except asyncio.CancelledError:
                if stalled and task.uncancel() == 0:
                    raise UpstreamTimeout(provider, f"the stream stalled for more than {gap_s * 1000:.0f} ms") from None
                raise
            waiting_since = None
            yield delta
    finally:
        timer.cancel()
        await gen.aclose()


def _score(slot: Slot, exc: ProviderError) -> None:
    """Connect errors, timeouts and 5xx count against the provider's health; 4xx do not."""
    unhealthy = isinstance(exc, (UpstreamConnectError, UpstreamTimeout)) or (
        isinstance(exc, UpstreamStatus) and exc.status >= 500
    )
    if unhealthy:
        slot.breaker.record_failure()
    else:
        slot.breaker.release()
