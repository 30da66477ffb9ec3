"""The metrics store as a Ray actor, and the clients the gateway and control plane hold.

chdb lets one process own a data directory, so one actor owns the store (embedded or server,
the same code) and every replica talks to it through :class:`MetricsClient`:

    gateway replica ──MetricsRecorder(batches)──► MetricsActor ──► chdb / ClickHouse
    control replica ──MetricsClient.usage()────►      │
                    ──.timeseries() / .top()──►      │   (from the rollups)
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from datetime import datetime
from pathlib import Path

import ray

from serve.metrics.records import Ranking, RequestRecord, TimeSeries, UsageReport
from serve.metrics.spool import Spool, replay_orphans
from serve.metrics.store import MetricsStore, open_backend

log = logging.getLogger(__name__)

ACTOR_NAME = "foundry-metrics"
CALL_TIMEOUT_S = 30.0


@ray.remote(num_cpus=0, max_concurrency=64)
class MetricsActor:
    """Owns the metrics store. Async actor: calls interleave, the store serialises statements."""

    def __init__(self, backend: str, path: str | None, url: str | None) -> None:
        self._store = MetricsStore(open_backend(backend=backend, path=path, url=url))
        self._closed = False

    async def insert(self, rows: list[RequestRecord], token: str | None = None) -> int:
        if self._closed:
            raise RuntimeError("metrics store is closed")
        await self._store.insert(rows, token)
        return len(rows)

    async def usage(
        self, since: datetime | None = None, until: datetime | None = None, project_id: str | None = None
    ) -> UsageReport:
        return await self._store.usage(since=since, until=until, project_id=project_id)

    async def count(self) -> int:
        return await self._store.count()

    async def timeseries(self, metric: str, interval: str, kwargs: dict) -> TimeSeries:
        return await self._store.timeseries(metric, interval, **kwargs)

    async def top(self, metric: str, by: str, kwargs: dict) -> Ranking:
        return await self._store.top(metric, by, **kwargs)

    async def insert_benchmarks(self, rows: list[dict], token: str | None = None) -> int:
        return await self._store.insert_benchmarks(rows, token)

    async def benchmarks(self, model_path: str | None = None) -> list[dict]:
        return await self._store.benchmarks(model_path=model_path)

    async def ready(self) -> bool:
        return True

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._store.close()


def start_metrics_actor(*, name: str, namespace: str, backend: str, path: str | None, url: str | None):
    """The store's actor, restarted by Ray whenever its process dies (its store reopens; the
    recorders keep their rows meanwhile and send them again)."""
    return MetricsActor.options(name=name, namespace=namespace, max_restarts=-1).remote(backend, path, url)


class MetricsClient:
    """Async access to the :class:`MetricsActor`; picklable, so it travels to replicas."""

    def __init__(self, actor: ray.actor.ActorHandle) -> None:
        self._actor = actor

    async def insert(self, rows: list[RequestRecord], token: str | None = None) -> None:
        """Write ``rows``; sent again with the same ``token`` (the answer was lost), they are
        stored once."""
        await asyncio.wait_for(self._actor.insert.remote(rows, token), CALL_TIMEOUT_S)

    async def usage(
        self, *, since: datetime | None = None, until: datetime | None = None, project_id: str | None = None
    ) -> UsageReport:
        return await asyncio.wait_for(self._actor.usage.remote(since, until, project_id), CALL_TIMEOUT_S)

    async def count(self) -> int:
        return await asyncio.wait_for(self._actor.count.remote(), CALL_TIMEOUT_S)

    async def timeseries(self, metric: str, interval: str, **kwargs) -> TimeSeries:
        """:meth:`MetricsStore.timeseries` in the actor (same arguments and errors)."""
        return await _bad_arguments_as_raised(self._actor.timeseries.remote(metric, interval, kwargs))

    async def top(self, metric: str, by: str, **kwargs) -> Ranking:
        """:meth:`MetricsStore.top` in the actor (same arguments and errors)."""
        return await _bad_arguments_as_raised(self._actor.top.remote(metric, by, kwargs))

    async def insert_benchmarks(self, rows: list[dict], token: str | None = None) -> int:
        """Store benchmark rows; with ``token``, once however often the same token is sent."""
        return await asyncio.wait_for(self._actor.insert_benchmarks.remote(rows, token), CALL_TIMEOUT_S)

    async def benchmarks(self, *, model_path: str | None = None) -> list[dict]:
        return await asyncio.wait_for(self._actor.benchmarks.remote(model_path), CALL_TIMEOUT_S)


async def _bad_arguments_as_raised(ref: ray.ObjectRef):  # noqa: ANN202
    """Await ``ref``; the store's ``ValueError`` (an argument out of range) comes back as itself,
    not as Ray's wrapper, whose message carries the actor's traceback."""
    try:
        return await asyncio.wait_for(ref, CALL_TIMEOUT_S)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, ValueError):
            raise ValueError(str(exc.cause)) from None
        raise


class MetricsRecorder:
    """Buffers request records off the request path and writes them in batches.

    ``record()`` is a non-blocking append. A background task flushes every ``interval_s`` or
    as soon as ``max_rows`` are waiting; ``close()`` flushes what is left. A batch that fails to
    write is sent again, the same rows with the same token, until it is written: if the store
    did write it and only the answer was lost (the actor died after the insert), the store keeps
    one copy. Rows wait meanwhile (up to ``max_buffered``; beyond that the oldest are dropped
    with an error log, so a dead store cannot exhaust the gateway's memory).

    With ``spool_dir``, every row is also on local disk until it is stored
    (:mod:`serve.metrics.spool`): a recorder killed outright loses none, and the first flush of
    a recorder sends what dead recorders of that directory left.
    """

    def __init__(
        self,
        sink: MetricsClient,
        *,
        interval_s: float = 0.5,
        max_rows: int = 512,
        max_buffered: int = 200_000,
        spool_dir: Path | None = None,
    ) -> None:
        self._sink = sink
        self._spool: Spool | None = None
        if spool_dir is not None:
            try:
                self._spool = Spool(spool_dir)
            except OSError as exc:  # e.g. a node of a joined cluster without that directory
                log.warning("metrics rows are not spooled to %s: %s", spool_dir, exc)
        self._spool_dir = spool_dir
        self._orphans_sent = self._spool is None
        self._interval_s = interval_s
        self._max_rows = max_rows
        self._buffer: deque[RequestRecord] = deque(maxlen=max_buffered)
        self._pending: tuple[str, list[RequestRecord]] | None = None  # (token, rows) not yet written
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._flush_lock = asyncio.Lock()

    def record(self, rec: RequestRecord) -> None:
        if len(self._buffer) == self._buffer.maxlen:
            log.error("metrics buffer full; dropping the oldest record")
        self._buffer.append(rec)
        if self._spool is not None:
            self._spool.append(rec)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        if len(self._buffer) >= self._max_rows:
            self._wake.set()

    async def flush(self) -> None:
        """Write every row recorded so far."""
        await self._send(drain=True)

    async def _send(self, *, drain: bool) -> None:
        """Send the batch that failed last time, if any, then what is waiting. Unless ``drain``,
        that is one batch per tick, and more only while a full batch (``max_rows``) waits: rows
        recorded while an insert runs wait for the next tick, so a store that takes a while per
        insert gets one insert per interval, not one right after another."""
        async with self._flush_lock:
            if not self._orphans_sent:
                await replay_orphans(self._spool_dir, self._sink.insert, keep=self._spool.id)
                self._orphans_sent = True
            batched = False
            while self._pending is not None or self._buffer:
                if self._pending is None:
                    if batched and not drain and len(self._buffer) < self._max_rows:
                        return
                    batched = True
                    batch = list(self._buffer)
                    self._buffer.clear()
                    self._pending = (uuid.uuid4().hex, batch)
                    if self._spool is not None:
                        self._spool.sending(*self._pending)
                token, batch = self._pending
                await self._sink.insert(batch, token)
                self._pending = None
                if self._spool is not None:
                    self._spool.sent(self._buffer)

    @property
    def waiting(self) -> int:
        """Rows recorded and not yet written."""
        return len(self._buffer) + (len(self._pending[1]) if self._pending else 0)

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self._interval_s)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self._send(drain=False)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep the rows; try again next tick
                log.warning("metrics flush failed (%d rows kept): %s", self.waiting, exc)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self.flush()
        if self._spool is not None:
            self._spool.close()
            self._spool = None
