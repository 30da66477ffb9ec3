"""Where the counters of :mod:`serve.gateway.ratelimit` live: the store protocol and its three
implementations, which share one algorithm (see that module for what is counted).

    MemoryStore   this process; the algorithm in Python
    ActorStore    a MemoryStore inside one named, detached Ray actor
    RedisStore    the same algorithm in Lua (:mod:`serve.gateway._ratelimit_lua`), one script
                  call per reserve or settle

A store's data per counter: a log of entries (member → time, cost) with a running total of the
live ones, and for budgets a settled total of the period.

ActorStore and RedisStore send the calls that arrive while one is in flight together, as one
actor call or one Redis pipeline (:class:`_Batcher`): no added latency when idle, and their
throughput is not capped by one round trip per request under load. The store still applies the
operations one at a time, each atomically, in arrival order. Errors of Ray and Redis are turned
into :class:`~serve.gateway.errors.LimitsUnavailable` here.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple, Protocol

import ray
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError, ResponseError

from serve.gateway import _ratelimit_lua as lua
from serve.gateway.errors import LimitsUnavailable

log = logging.getLogger(__name__)

WINDOW_S = 60.0
STORE_TIMEOUT_S = 2.0  # one round trip (a batch of reserves or settles)
STARTUP_TIMEOUT_S = 60.0  # finding or starting the actor, connecting to Redis
MAX_BATCH = 256
ACTOR_NAME = "foundry-limiter"
NEVER = -1.0  # CounterState.wait_s: expiries alone never let the request fit


class Counter(NamedTuple):
    """One limit a request counts against, as a store sees it.

    A window's usage is the live entries of its log (an entry lives ``ttl_s``). A budget
    (``settled_until`` > 0) adds a settled total that lives until ``settled_until`` (unix s);
    its log holds only the reservations of requests not settled yet.
    """

    name: str
    limit: float
    cost: float
    ttl_s: float
    settled_until: float = 0.0


class CounterState(NamedTuple):
    """A counter at the time of a check: usage before this request, seconds until expiries
    alone let the request fit (0 if it fits, :data:`NEVER` if they never do), and seconds
    until the oldest live entry leaves (0 if none)."""

    used: float
    wait_s: float
    reset_s: float


class LimitStore(Protocol):
    """Where counters live. ``reserve`` must check and reserve atomically."""

    async def reserve(
        self, ticket_id: str, counters: Sequence[Counter], now: float
    ) -> tuple[bool, list[CounterState]]:
        """All-or-nothing: if every counter fits, add ``cost`` to each (for ``cost > 0``)."""
        ...

    async def settle(self, ticket_id: str, settlements: Sequence[tuple[Counter, float]], now: float) -> None:
        """For each (counter, actual): drop the ticket's reservation, then add the actual usage
        (budgets: to the settled total; windows: as a new entry at ``now``)."""
        ...

    async def start(self) -> None:
        """Connect, or find the actor, ahead of the first request (else the first call does)."""
        ...

    async def close(self) -> None: ...


def fits(used: float, cost: float, limit: float) -> bool:
    return used < limit and used + cost <= limit


class _Log:
    """Entries of one counter: member → (time, cost), a heap by time, and their running total."""

    __slots__ = ("entries", "heap", "total", "ttl_s")

    def __init__(self, ttl_s: float) -> None:
        self.entries: dict[str, tuple[float, float]] = {}
        self.heap: list[tuple[float, str]] = []
        self.total = 0.0
        self.ttl_s = ttl_s

    def expire(self, now: float) -> None:
        cutoff = now - self.ttl_s
        heap, entries = self.heap, self.entries
        while heap and heap[0][0] <= cutoff:
            t, member = heapq.heappop(heap)
            entry = entries.get(member)
            if entry is not None and entry[0] == t:
                del entries[member]
                self.total -= entry[1]
        if not entries:  # no float noise survives an empty log
            self.total = 0.0
            heap.clear()

    def add(self, member: str, t: float, cost: float) -> None:
        self.entries[member] = (t, cost)
        heapq.heappush(self.heap, (t, member))
        self.total += cost

    def remove(self, member: str) -> None:
        entry = self.entries.pop(member, None)
        if entry is not None:
            self.total = self.total - entry[1] if self.entries else 0.0  # its heap item goes lazily

    def oldest(self) -> float | None:
        heap, entries = self.heap, self.entries
        while heap and entries.get(heap[0][1], (None,))[0] != heap[0][0]:
            heapq.heappop(heap)  # removed earlier
        return heap[0][0] if heap else None

    def wait(self, used: float, base: float, cost: float, limit: float, now: float) -> float:
        if not fits(base, cost, limit):
            return NEVER
        freed = 0.0
        for t, c in sorted(self.entries.values()):
            freed += c
            if fits(used - freed, cost, limit):
                return t + self.ttl_s - now
        return self.ttl_s  # unreachable while base fits; the same bound RedisStore gives


class MemoryStore:
    """Counters in this process; the algorithm :class:`RedisStore` runs in Lua, in Python.

    The synchronous methods are the whole algorithm: :class:`ActorStore` runs them in its
    actor, and the async ones (for a single process) call them without awaiting in between,
    so each call is atomic on the event loop.
    """

    SWEEP_EVERY_S = WINDOW_S

    def __init__(self) -> None:
        self._logs: dict[str, _Log] = {}
        self._settled: dict[str, list[float]] = {}  # name → [total, until]
        self._swept_at = -math.inf

    async def reserve(
        self, ticket_id: str, counters: Sequence[Counter], now: float
    ) -> tuple[bool, list[CounterState]]:
        return self.reserve_now(ticket_id, counters, now)

    async def settle(self, ticket_id: str, settlements: Sequence[tuple[Counter, float]], now: float) -> None:
        self.settle_now(ticket_id, settlements, now)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def reserve_now(self, ticket_id: str, counters: Sequence[Counter], now: float) -> tuple[bool, list[CounterState]]:
        self._sweep(now)
        logs, used, bases = [], [], []
        for c in counters:
            entries = self._logs.get(c.name)
            if entries is not None:
                entries.expire(now)
            base = self._base(c, now)
            logs.append(entries)
            bases.append(base)
            used.append((entries.total if entries is not None else 0.0) + base)
        ok = all(fits(u, c.cost, c.limit) for u, c in zip(used, counters, strict=True))
        if ok:
            for i, c in enumerate(counters):
                if c.cost > 0:
                    if logs[i] is None:
                        logs[i] = self._logs[c.name] = _Log(c.ttl_s)
                    logs[i].add(ticket_id, now, c.cost)
        states = []
        for entries, u, base, c in zip(logs, used, bases, counters, strict=True):
            wait = 0.0
            if not ok and not fits(u, c.cost, c.limit):
                wait = entries.wait(u, base, c.cost, c.limit, now) if entries is not None else NEVER
            oldest = entries.oldest() if entries is not None else None
            states.append(CounterState(u, wait, 0.0 if oldest is None else oldest + c.ttl_s - now))
        return ok, states

    def settle_now(self, ticket_id: str, settlements: Sequence[tuple[Counter, float]], now: float) -> None:
        for c, actual in settlements:
            entries = self._logs.get(c.name)
            if entries is not None:
                entries.remove(ticket_id)
            if actual <= 0:
                continue
            if c.settled_until > 0:
                settled = self._settled.setdefault(c.name, [0.0, c.settled_until])
                settled[0] += actual
                settled[1] = c.settled_until
            else:
                if entries is None:
                    entries = self._logs[c.name] = _Log(c.ttl_s)
                entries.add(ticket_id + "+", now, actual)

    def size(self) -> int:
        """How many counters this store holds (idle ones are dropped about once a window)."""
        return len(self._logs) + len(self._settled)

    def _base(self, c: Counter, now: float) -> float:
        if c.settled_until <= 0:
            return 0.0
        settled = self._settled.get(c.name)
        return settled[0] if settled is not None and settled[1] > now else 0.0

    def _sweep(self, now: float) -> None:
        """Drop what expired, now and then, so counters of idle keys do not pile up."""
        if now - self._swept_at < self.SWEEP_EVERY_S:
            return
        self._swept_at = now
        for name in list(self._logs):
            entries = self._logs[name]
            entries.expire(now)
            if not entries.entries:
                del self._logs[name]
        for name in [n for n, (_, until) in self._settled.items() if until <= now]:
            del self._settled[name]


class _Batcher:
    """Sends the calls that arrive while one round trip is in flight as the next round trip.

    ``send`` takes a list of operations and returns their results in order; it raises
    :class:`LimitsUnavailable` for a failure of the whole round trip, or returns an exception
    in place of one operation's result.
    """

    def __init__(self, send: Callable[[list], Awaitable[list]], timeout_s: float) -> None:
        self._send = send
        self._timeout_s = timeout_s
        self._queue: list[tuple[Any, asyncio.Future]] = []
        self._task: asyncio.Task | None = None

    async def call(self, op: Any) -> Any:
        future = asyncio.get_running_loop().create_future()
        self._queue.append((op, future))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                try:
                    async with asyncio.timeout(self._timeout_s):
                        results = await self._send([op for op, _ in batch])
                except TimeoutError:
                    error = LimitsUnavailable(f"The limit store did not answer within {self._timeout_s:g}s.")
                    results = [error] * len(batch)
                except LimitsUnavailable as exc:
                    results = [exc] * len(batch)
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():  # its caller went away
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._task = None
            for _, future in self._queue:  # only when cancelled: nobody else will answer them
                if not future.done():
                    future.set_exception(LimitsUnavailable("The limit store is shutting down."))
            if self._queue:
                self._queue = []


@ray.remote(max_concurrency=1)
class _LimiterActor:
    """A MemoryStore behind a Ray actor; calls run one at a time, so each is atomic."""

    def __init__(self) -> None:
        self._store = MemoryStore()

    def reserve_many(self, ops: list[tuple[str, list[Counter], float]]) -> list[tuple[bool, list[CounterState]]]:
        return [self._store.reserve_now(ticket_id, counters, now) for ticket_id, counters, now in ops]

    def settle_many(self, ops: list[tuple[str, list[tuple[Counter, float]], float]]) -> list[None]:
        return [self._store.settle_now(ticket_id, settlements, now) for ticket_id, settlements, now in ops]

    def ready(self) -> bool:
        return True


class ActorStore:
    """The embedded store: one named, detached Ray actor, shared by every gateway replica.

    The actor is found or created on first use (``get_if_exists``), so replicas starting
    together share one. It takes ``num_cpus`` (``[limits] num_cpus``, default 0).
    """

    def __init__(self, name: str = ACTOR_NAME, *, num_cpus: float = 0.0, timeout_s: float = STORE_TIMEOUT_S) -> None:
        self._name = name
        self._num_cpus = num_cpus
        self._timeout_s = timeout_s
        self._actor: ray.actor.ActorHandle | None = None
        self._lock = asyncio.Lock()
        self._reserves = _Batcher(self._reserve_many, timeout_s)
        self._settles = _Batcher(self._settle_many, timeout_s)

    async def reserve(
        self, ticket_id: str, counters: Sequence[Counter], now: float
    ) -> tuple[bool, list[CounterState]]:
        await self._handle()  # outside the batch's timeout: starting the actor may take a while
        return await self._reserves.call((ticket_id, list(counters), now))

    async def settle(self, ticket_id: str, settlements: Sequence[tuple[Counter, float]], now: float) -> None:
        await self._handle()
        await self._settles.call((ticket_id, list(settlements), now))

    async def start(self) -> None:
        if ray.is_initialized():  # outside Ray (an in-process gateway), wait for a limited key
            await self._handle()

    async def close(self) -> None:
        self._actor = None  # the actor is shared: it outlives this replica

    async def _reserve_many(self, ops: list) -> list:
        actor = await self._handle()
        return await self._call(actor.reserve_many.remote(ops))

    async def _settle_many(self, ops: list) -> list:
        actor = await self._handle()
        return await self._call(actor.settle_many.remote(ops))

    async def _call(self, ref: ray.ObjectRef) -> list:
        try:
            return await ref
        except ray.exceptions.RayError as exc:
            self._actor = None  # look it up again next time (it may have been restarted)
            raise LimitsUnavailable("The limiter actor is unavailable.") from exc

    async def _handle(self) -> ray.actor.ActorHandle:
        if self._actor is None and not ray.is_initialized():
            # never auto-start a Ray cluster from a gateway
            raise LimitsUnavailable("The embedded limiter needs Ray; set [limits] redis_url to use Redis instead.")
        if self._actor is None:
            async with self._lock:
                if self._actor is None:
                    try:
                        # a GCS lookup that blocks: off the event loop
                        actor = await asyncio.wait_for(asyncio.to_thread(self._get_or_create), STARTUP_TIMEOUT_S)
                        await asyncio.wait_for(actor.ready.remote(), STARTUP_TIMEOUT_S)
                    except (TimeoutError, ray.exceptions.RayError) as exc:
                        raise LimitsUnavailable("The limiter actor cannot be started.") from exc
                    self._actor = actor
        return self._actor

    def _get_or_create(self) -> ray.actor.ActorHandle:
        return _LimiterActor.options(
            name=self._name, get_if_exists=True, lifetime="detached", num_cpus=self._num_cpus
        ).remote()


class RedisStore:
    """Counters in Valkey/Redis, checked and reserved by one Lua script per operation.

    Keys start with ``prefix`` (``foundry:rl:log:…``, ``…sum:…``, ``…used:…``) and all expire
    (windows: a second after their last entry; budgets: a day after their period ends). A single
    server or a primary with replicas; not Redis Cluster (a request's counters span hash slots).
    Every round trip has ``timeout_s``; nothing is retried, since a reservation is not
    idempotent (a script that did not run, NOSCRIPT, is loaded and sent again). Redis errors
    become :class:`LimitsUnavailable` here.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "foundry:rl:",
        timeout_s: float = STORE_TIMEOUT_S,
        max_connections: int = 64,
    ) -> None:
        self._url = url
        self._prefix = prefix
        self._timeout_s = timeout_s
        self._max_connections = max_connections
        self._client: aioredis.Redis | None = None
        self._reserves = _Batcher(self._reserve_many, timeout_s)
        self._settles = _Batcher(self._settle_many, timeout_s)

    def __repr__(self) -> str:
        return f"RedisStore(prefix={self._prefix!r})"  # the URL may hold a password

    async def reserve(
        self, ticket_id: str, counters: Sequence[Counter], now: float
    ) -> tuple[bool, list[CounterState]]:
        args: list = [repr(now), ticket_id, len(counters)]
        for c in counters:
            args += [_num(c.limit), _num(c.cost), _num(c.ttl_s), _ms_until(c.settled_until, now)]
        reply = await self._reserves.call((self._keys(counters), args))
        values = [float(v) for v in reply[1:]]
        return bool(int(reply[0])), [CounterState(*values[i : i + 3]) for i in range(0, len(values), 3)]

    async def settle(self, ticket_id: str, settlements: Sequence[tuple[Counter, float]], now: float) -> None:
        args: list = [repr(now), ticket_id, len(settlements)]
        for c, actual in settlements:
            args += [_num(c.cost), _num(actual), _num(c.ttl_s), _ms_until(c.settled_until, now)]
        await self._settles.call((self._keys([c for c, _ in settlements]), args))

    async def start(self) -> None:
        try:
            async with asyncio.timeout(STARTUP_TIMEOUT_S):
                await self._connect().ping()
        except (TimeoutError, RedisError) as exc:
            raise LimitsUnavailable("Redis is unavailable for rate limits.") from exc

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            try:
                async with asyncio.timeout(self._timeout_s):
                    await client.aclose(close_connection_pool=True)
            except (TimeoutError, RedisError) as exc:
                log.warning("closing the Redis limiter connections failed: %s", exc)

    def _keys(self, counters: Sequence[Counter]) -> list[str]:
        p = self._prefix
        return [k for c in counters for k in (f"{p}log:{c.name}", f"{p}sum:{c.name}", f"{p}used:{c.name}")]

    def _connect(self) -> aioredis.Redis:
        """The client, made on first use, in the caller's event loop."""
        if self._client is None:
            pool = aioredis.BlockingConnectionPool.from_url(
                self._url,
                max_connections=self._max_connections,
                timeout=self._timeout_s,
                socket_timeout=self._timeout_s,
                socket_connect_timeout=self._timeout_s,
                retry=Retry(NoBackoff(), 0),
            )
            self._client = aioredis.Redis(connection_pool=pool)
        return self._client

    async def _reserve_many(self, ops: list) -> list:
        return await self._pipeline(lua.RESERVE, ops)

    async def _settle_many(self, ops: list) -> list:
        return await self._pipeline(lua.SETTLE, ops)

    async def _pipeline(self, script: str, ops: list[tuple[list[str], list]]) -> list:
        """Run ``script`` once per (keys, args) in one round trip; a NOSCRIPT reply (the server
        lost its script cache) means that call did not run: load the script and send it again."""
        client = self._connect()
        sha = lua.SHA[script]
        try:
            results = await self._evalsha(client, sha, ops)
            missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
            if missing:
                await client.script_load(script)
                for i, result in zip(missing, await self._evalsha(client, sha, [ops[i] for i in missing]), strict=True):
                    results[i] = result
        except RedisError as exc:
            raise LimitsUnavailable("Redis is unavailable for rate limits.") from exc
        return [
            LimitsUnavailable("Redis refused a rate-limit update.") if isinstance(r, ResponseError) else r
            for r in results
        ]

    @staticmethod
    async def _evalsha(client: aioredis.Redis, sha: str, ops: list[tuple[list[str], list]]) -> list:
        async with client.pipeline(transaction=False) as pipe:
            for keys, args in ops:
                pipe.evalsha(sha, len(keys), *keys, *args)
            return await pipe.execute(raise_on_error=False)


def _num(x: float) -> str:
    """Numbers for Lua: integers without a fraction, so members read back identically."""
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _ms_until(until: float, now: float) -> str:
    """Milliseconds from ``now`` to ``until`` (at least 1), or "0" for a window."""
    return str(max(1, math.ceil((until - now) * 1000))) if until > 0 else "0"
