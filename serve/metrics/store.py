"""The request-metrics store: one ClickHouse schema, two ways to reach it.

- :class:`ChdbBackend`: the ClickHouse engine embedded in-process through chdb, with its data
  under ``$FOUNDRY_HOME/metrics``. chdb lets only one process open a data directory, so in a
  running stack exactly one Ray actor (:mod:`serve.metrics.actor`) owns it.
- :class:`ClickHouseHTTPBackend`: a ClickHouse server through clickhouse-connect.

Both speak the same SQL and exchange rows as JSONEachRow, so :class:`MetricsStore` (schema,
inserts and the usage report) is written once.

Example::

    store = MetricsStore(ChdbBackend("/tmp/metrics"))
    await store.insert([RequestRecord(...)])
    report = await store.usage()
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import fields
from datetime import datetime, timezone
from typing import Any, Protocol, TypeVar
from urllib.parse import urlparse

import numpy as np

from serve.metrics import rollups
from serve.metrics.migrations import BENCH_COLUMNS, BENCH_TABLE, TABLE, migrate
from serve.metrics.records import ModelUsage, Ranking, RequestRecord, Series, TimeSeries, UsageReport

T = TypeVar("T")


class MetricsBackendError(Exception):
    """The metrics database could not be reached or rejected a statement."""


class Backend(Protocol):
    """Blocking access to one ClickHouse database; :class:`MetricsStore` runs it off the loop."""

    def command(self, sql: str) -> None: ...

    def insert_json_rows(self, table: str, payload: bytes, token: str | None = None) -> None:
        """``token``: a retried insert with the same token is stored once (deduplication)."""
        ...

    def query_rows(self, sql: str) -> list[dict]: ...

    def close(self) -> None: ...


class ChdbBackend:
    """The embedded ClickHouse engine. Only one process may open ``path`` at a time."""

    def __init__(self, path: str) -> None:
        from chdb import session

        try:
            self._session = session.Session(path)
        except Exception as exc:  # chdb raises plain RuntimeError
            raise MetricsBackendError(
                f"cannot open the embedded metrics store at {path}: {exc} "
                "(is another process using it?)"
            ) from exc

    def command(self, sql: str) -> None:
        self._query(sql)

    def insert_json_rows(self, table: str, payload: bytes, token: str | None = None) -> None:
        settings = f" SETTINGS {_dedup_settings(token)}" if token else ""
        self._query(f"INSERT INTO {table}{settings} FORMAT JSONEachRow\n" + payload.decode())

    def query_rows(self, sql: str) -> list[dict]:
        out = self._query(sql + " FORMAT JSONEachRow").bytes()
        return [json.loads(line) for line in out.splitlines() if line]

    def _query(self, sql: str):
        try:
            return self._session.query(sql)
        except Exception as exc:
            raise MetricsBackendError(f"metrics query failed: {exc}") from exc

    def close(self) -> None:
        self._session.close()


# Deduplicate the rollups' blocks too, so a batch stored once is counted once everywhere.
_DEDUP = {"deduplicate_blocks_in_dependent_materialized_views": 1}


def _dedup_settings(token: str) -> str:
    if not token.replace("-", "").isalnum():
        raise ValueError(f"not an insert token: {token!r}")
    return f"insert_deduplication_token = '{token}', deduplicate_blocks_in_dependent_materialized_views = 1"


class ClickHouseHTTPBackend:
    """A ClickHouse server, e.g. ``http://user:password@clickhouse:8123/foundry``."""

    def __init__(self, url: str) -> None:
        import clickhouse_connect

        parsed = urlparse(url)
        database = parsed.path.strip("/") or "default"
        try:
            self._client = clickhouse_connect.get_client(
                host=parsed.hostname or "localhost",
                port=parsed.port or (8443 if parsed.scheme == "https" else 8123),
                username=parsed.username or "default",
                password=parsed.password or "",
                secure=parsed.scheme == "https",
                database="default",
                connect_timeout=10,
                send_receive_timeout=30,
            )
            self._client.command(f"CREATE DATABASE IF NOT EXISTS {_ident(database)}")
            self._client.database = database
        except Exception as exc:
            raise MetricsBackendError(f"cannot reach ClickHouse at {parsed.hostname}:{parsed.port}: {exc}") from exc

    def command(self, sql: str) -> None:
        try:
            self._client.command(sql)
        except Exception as exc:
            raise MetricsBackendError(f"metrics query failed: {exc}") from exc

    def insert_json_rows(self, table: str, payload: bytes, token: str | None = None) -> None:
        settings = _DEDUP | {"insert_deduplication_token": token} if token else None
        try:
            self._client.raw_insert(table, insert_block=payload, fmt="JSONEachRow", settings=settings)
        except Exception as exc:
            raise MetricsBackendError(f"metrics insert failed: {exc}") from exc

    def query_rows(self, sql: str) -> list[dict]:
        try:
            out = self._client.raw_query(sql, fmt="JSONEachRow")
        except Exception as exc:
            raise MetricsBackendError(f"metrics query failed: {exc}") from exc
        return [json.loads(line) for line in out.splitlines() if line]

    def close(self) -> None:
        self._client.close()


class MetricsStore:
    """Schema, inserts and the usage report over any :class:`Backend`."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._lock = asyncio.Lock()  # backends are not thread-safe; one statement at a time
        migrate(backend)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a thread, one statement at a time. A caller cancelled meanwhile waits
        for its statement to end before the next may start: the thread cannot be stopped, and a
        second statement alongside it fails (clickhouse-connect refuses concurrent queries in a
        session) or races (chdb)."""
        async with self._lock:
            call = asyncio.ensure_future(asyncio.to_thread(fn, *args))
            try:
                return await asyncio.shield(call)
            except asyncio.CancelledError:
                await asyncio.wait([call])
                if not call.cancelled():
                    call.exception()  # retrieved: the caller is gone, nobody wants it
                raise

    async def insert(self, rows: list[RequestRecord], token: str | None = None) -> None:
        """Write ``rows``; with ``token``, writing the same batch again stores it once."""
        if not rows:
            return
        payload = b"\n".join(_encode(r) for r in rows)
        await self._call(self._backend.insert_json_rows, TABLE, payload, token)

    async def usage(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        project_id: str | None = None,
    ) -> UsageReport:
        where = _where(since, until, project_id)
        sql = f"""
            SELECT model,
                   count() AS requests,
                   countIf(status >= 400) AS errors,
                   sum(prompt_tokens) AS prompt_tokens,
                   sum(completion_tokens) AS completion_tokens,
                   sum(cost_usd) AS cost_usd,
                   quantileExactIf(0.5)(latency_ms, status < 400) AS latency_p50_ms,
                   quantileExactIf(0.95)(latency_ms, status < 400) AS latency_p95_ms,
                   quantileExactIf(0.5)(ttft_ms, status < 400 AND ttft_ms IS NOT NULL) AS ttft_p50_ms,
                   quantileExactIf(0.95)(ttft_ms, status < 400 AND ttft_ms IS NOT NULL) AS ttft_p95_ms,
                   countIf(status < 400) AS ok,
                   countIf(status < 400 AND ttft_ms IS NOT NULL) AS ok_ttft
            FROM {TABLE} {where}
            GROUP BY model ORDER BY model"""
        rows = await self._call(self._backend.query_rows, sql)
        models = [
            ModelUsage(
                model=r["model"],
                requests=int(r["requests"]),
                errors=int(r["errors"]),
                prompt_tokens=int(r["prompt_tokens"]),
                completion_tokens=int(r["completion_tokens"]),
                cost_usd=round(float(r["cost_usd"]), 6),
                # quantile over zero rows is 0/nan in ClickHouse: report "no data" as null
                latency_p50_ms=_num(r["latency_p50_ms"]) if int(r["ok"]) else None,
                latency_p95_ms=_num(r["latency_p95_ms"]) if int(r["ok"]) else None,
                ttft_p50_ms=_num(r["ttft_p50_ms"]) if int(r["ok_ttft"]) else None,
                ttft_p95_ms=_num(r["ttft_p95_ms"]) if int(r["ok_ttft"]) else None,
            )
            for r in rows
        ]
        return UsageReport(
            requests=sum(m.requests for m in models),
            errors=sum(m.errors for m in models),
            prompt_tokens=sum(m.prompt_tokens for m in models),
            completion_tokens=sum(m.completion_tokens for m in models),
            cost_usd=round(sum(m.cost_usd for m in models), 6),
            models=models,
        )

    async def timeseries(
        self,
        metric: str,
        interval: str,
        *,
        since: datetime,
        until: datetime,
        group_by: str | None = None,
        project_id: str | None = None,
    ) -> TimeSeries:
        """``metric`` per ``interval`` bucket over ``[since, until)``, from that interval's rollup.

        ``since`` rounds down and ``until`` up to bucket starts; buckets without data are 0. One
        series per value of ``group_by`` (``model``, ``project``, ``provider``, ``key``,
        ``deployment``) seen in the range, or one series, group ``"all"``, without it. Raises
        ``ValueError`` naming the argument that is out of range.
        """
        _check(metric=metric, interval=interval, group_by=group_by)
        rollup = rollups.rollup_for(interval, group_by)
        since_s = rollups.floor_s(_epoch(since), rollup.step_s)
        until_s = rollups.ceil_s(_epoch(until), rollup.step_s)
        if until_s <= since_s:
            raise ValueError("until: must be later than since")
        buckets = (until_s - since_s) // rollup.step_s
        if buckets > MAX_POINTS:
            raise ValueError(
                f"interval: {buckets} buckets of {interval} in the range; at most {MAX_POINTS} (use a coarser interval)"
            )
        sql = rollups.timeseries_sql(
            metric, interval, since_s=since_s, until_s=until_s, group_by=group_by, project_id=project_id
        )
        rows = await self._call(self._backend.query_rows, sql)
        if not group_by:
            rows = [{**row, "g": "all"} for row in rows] or [{"g": "all", "ts": [], "vs": []}]
        count = metric in rollups.COUNT_METRICS
        times = [_utc(t) for t in range(since_s, until_s, rollup.step_s)]
        series = []
        for row in rows:  # ordered by group
            values = np.zeros(len(times))  # empty buckets are 0
            values[(np.asarray(row["ts"], dtype=np.int64) - since_s) // rollup.step_s] = row["vs"]
            numbers = values.astype(np.int64).tolist() if count else values.tolist()
            series.append(Series(group=row["g"], points=list(zip(times, numbers, strict=True))))
        return TimeSeries(metric, interval, _utc(since_s), _utc(until_s), series)

    async def top(
        self,
        metric: str,
        by: str,
        *,
        since: datetime,
        until: datetime,
        limit: int = 10,
        project_id: str | None = None,
    ) -> Ranking:
        """The ``limit`` groups of ``by`` with the highest ``metric`` over ``[since, until)``.

        Read from the coarsest rollup whose buckets fit the range (a calendar month reads daily
        buckets); a range off 5-minute marks widens to them.
        """
        _check(metric=metric, by=by)
        if not 1 <= limit <= 1000:
            raise ValueError("limit: must be between 1 and 1000")
        rollup = rollups.fitting_rollup(_epoch(since), _epoch(until), by)
        since_s = rollups.floor_s(_epoch(since), rollup.step_s)
        until_s = rollups.ceil_s(_epoch(until), rollup.step_s)
        if until_s <= since_s:
            raise ValueError("until: must be later than since")
        sql = rollups.top_sql(
            metric, by, rollup=rollup, since_s=since_s, until_s=until_s, project_id=project_id, limit=limit
        )
        rows = await self._call(self._backend.query_rows, sql)
        number = int if metric in rollups.COUNT_METRICS else float
        data = [(row["g"], number(row["v"])) for row in rows]
        return Ranking(metric, by, _utc(since_s), _utc(until_s), rollup.interval, data)

    async def insert_benchmarks(self, rows: list[dict], token: str | None = None) -> int:
        """Store ``foundry bench`` rows (measured-data schema; other keys kept in ``extra``).
        With ``token``, a second insert with the same token stores nothing (a re-run step)."""
        if not rows:
            return 0
        now = _ts(datetime.now(timezone.utc))
        payload = b"\n".join(_encode_bench(row, now) for row in rows)
        await self._call(self._backend.insert_json_rows, BENCH_TABLE, payload, token)
        return len(rows)

    async def benchmarks(self, *, model_path: str | None = None) -> list[dict]:
        where = f"WHERE model_path = {_quote(model_path)}" if model_path is not None else ""
        sql = f"SELECT * FROM {BENCH_TABLE} {where} ORDER BY ts"
        rows = await self._call(self._backend.query_rows, sql)
        out = []
        for row in rows:
            extra = json.loads(row.pop("extra") or "{}")
            row.pop("ts", None)
            out.append({**row, **extra})
        return out

    async def count(self) -> int:
        rows = await self._call(self._backend.query_rows, f"SELECT count() AS n FROM {TABLE}")
        return int(rows[0]["n"])

    async def close(self) -> None:
        await self._call(self._backend.close)


def open_backend(*, backend: str, path: str | None = None, url: str | None = None) -> Backend:
    if backend == "embedded":
        if not path:
            raise ValueError("metrics.path is required for the embedded backend")
        return ChdbBackend(path)
    if backend == "clickhouse":
        if not url:
            raise ValueError('metrics.url is required when metrics.backend = "clickhouse"')
        return ClickHouseHTTPBackend(url)
    raise ValueError(f"unknown metrics backend {backend!r}; valid: embedded, clickhouse")


_RECORD_FIELDS = tuple(f.name for f in fields(RequestRecord))
_JSON = json.JSONEncoder(separators=(",", ":"))


def _encode(r: RequestRecord) -> bytes:
    # getattr, not dataclasses.asdict: asdict deep-copies every value, ~10x slower per row
    d = {name: getattr(r, name) for name in _RECORD_FIELDS}
    d["ts"] = _ts(r.ts)
    return _JSON.encode(d).encode()


def _encode_bench(row: dict, now: str) -> bytes:
    record = {"ts": now}
    for name, kind in BENCH_COLUMNS.items():
        value = row.get(name)
        if kind == "String":
            record[name] = "" if value is None else str(value)
        else:
            try:
                record[name] = float(value) if kind == "Float64" else int(float(value))
            except (TypeError, ValueError):
                raise ValueError(f"benchmark row {row.get('id', '?')!r}: {name} must be a number") from None
    record["extra"] = json.dumps({k: v for k, v in row.items() if k not in BENCH_COLUMNS}, default=str)
    return json.dumps(record, separators=(",", ":")).encode()


# DateTime64's range: no row lies outside it, so a bound beyond it means the same as its end
_TS_MIN, _TS_MAX = datetime(1900, 1, 1), datetime(2299, 12, 31, 23, 59, 59, 999000)


def _ts(dt: datetime) -> str:
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc).replace(tzinfo=None)
    return min(max(dt, _TS_MIN), _TS_MAX).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _where(since: datetime | None, until: datetime | None, project_id: str | None) -> str:
    clauses = []
    if since is not None:
        clauses.append(f"ts >= toDateTime64('{_ts(since)}', 3, 'UTC')")
    if until is not None:
        clauses.append(f"ts < toDateTime64('{_ts(until)}', 3, 'UTC')")
    if project_id is not None:
        clauses.append(f"project_id = {_quote(project_id)}")
    return ("WHERE " + " AND ".join(clauses)) if clauses else ""


_quote = rollups.quote


def _ident(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"invalid ClickHouse database name {name!r}")
    return name


MAX_POINTS = 10_000  # buckets per series


def _check(**args: str | None) -> None:
    valid = {
        "metric": rollups.METRICS,
        "interval": rollups.ROLLUPS,
        "group_by": rollups.DIMENSIONS,
        "by": rollups.DIMENSIONS,
    }
    for name, value in args.items():
        if value is None and name == "group_by":
            continue
        if value not in valid[name]:
            raise ValueError(f"{name}: {value!r} is not one of {', '.join(valid[name])}")


def _epoch(dt: datetime) -> float:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def _utc(epoch_s: int) -> datetime:
    return datetime.fromtimestamp(epoch_s, timezone.utc)


def _num(v) -> float | None:
    if v is None:
        return None
    f = float(v)
    return None if f != f else round(f, 3)


class ChdbStore(MetricsStore):
    """The embedded store: ``MetricsStore(ChdbBackend(path))``."""

    def __init__(self, path: str) -> None:
        super().__init__(ChdbBackend(path))
