"""Rollups of the request log that ClickHouse maintains itself, and the queries they answer.

Each interval has two ``AggregatingMergeTree`` tables fed by materialized views on every insert
into the raw ``requests`` table::

    INSERT ─► requests ──requests_5m_mv──► requests_5m   (5-minute buckets)
                       ──requests_1h_mv──► requests_1h   (hourly)
                       ──requests_1d_mv──► requests_1d   (daily, UTC)
                       ──requests_{5m,1h,1d}_keyless_mv──► requests_{5m,1h,1d}_keyless

A rollup row is one bucket of one (model, project, key, provider, deployment), or of one (model,
project, provider, deployment) in the keyless tables, which answer every query not grouped by
key (keys are the most numerous dimension, so they are several times smaller): counts and sums
as ``SimpleAggregateFunction(sum)``, latency and TTFT as t-digest quantile *states*, so a
percentile over many buckets or groups merges the states (``quantilesTDigestIfMerge``) instead of
averaging percentiles. Failed requests (status >= 400) count as requests and errors but stay out
of the latency and TTFT percentiles, as in the usage report.

The tables, views and the one-time back-fill of rows that predate them are a migration of the
store (:mod:`serve.metrics.migrations`). Queries here read the rollups only, never the raw rows:
a time series reads the rollup of its interval, a ranking reads the coarsest rollup whose
buckets fit its time range.

Example:
    >>> sql = timeseries_sql("requests", "1h", since_s=0, until_s=7200, group_by="model", project_id=None)
    >>> "FROM requests_1h_keyless" in sql and "GROUP BY t, g" in sql and "groupArray" in sql
    True
"""

from __future__ import annotations

from dataclasses import dataclass

RAW_TABLE = "requests"


ALL_DIMENSIONS = ("model", "project_id", "key_id", "provider", "deployment")
KEYLESS_DIMENSIONS = ("model", "project_id", "provider", "deployment")


@dataclass(frozen=True, slots=True)
class Rollup:
    interval: str  # as the API spells it
    step_s: int
    table: str
    bucket: str  # ClickHouse expression of a row's bucket start
    dimensions: tuple[str, ...] = ALL_DIMENSIONS

    @property
    def view(self) -> str:
        return f"{self.table}_mv"


_BUCKETS = (
    ("5m", 300, "toStartOfInterval(ts, INTERVAL 5 MINUTE)"),
    ("1h", 3600, "toStartOfHour(ts)"),
    ("1d", 86400, "toStartOfDay(ts)"),
)
ROLLUPS: dict[str, Rollup] = {i: Rollup(i, step, f"requests_{i}", bucket) for i, step, bucket in _BUCKETS}
# The same without the key: keys are the most numerous dimension, so these tables are several times
# smaller, and every query not grouped by key (percentile merges above all) reads them.
KEYLESS: dict[str, Rollup] = {
    i: Rollup(i, step, f"requests_{i}_keyless", bucket, KEYLESS_DIMENSIONS) for i, step, bucket in _BUCKETS
}
INTERVALS = tuple(ROLLUPS)

# API name -> rollup column
DIMENSIONS: dict[str, str] = {
    "model": "model",
    "project": "project_id",
    "provider": "provider",
    "key": "key_id",
    "deployment": "deployment",
}

_QUANTILES = "quantilesTDigestIfMerge(0.5, 0.95)"
# API name -> aggregate over rollup rows (Float64)
METRICS: dict[str, str] = {
    "requests": "sum(requests)",
    "errors": "sum(errors)",
    "tokens": "sum(prompt_tokens) + sum(completion_tokens)",
    "cost": "sum(cost_usd)",
    "latency_p50": f"{_QUANTILES}(latency_ms)[1]",
    "latency_p95": f"{_QUANTILES}(latency_ms)[2]",
    "ttft_p50": f"{_QUANTILES}(ttft_ms)[1]",
    "ttft_p95": f"{_QUANTILES}(ttft_ms)[2]",
}
COUNT_METRICS = frozenset({"requests", "errors", "tokens"})


def create_statements(rollup: Rollup) -> list[str]:
    """DDL of one rollup, with the back-fill of the raw rows that exist now.

    Safe to re-run after a crash part-way: the view is dropped and the table emptied before
    the back-fill, and the view is created last. The store runs this before it accepts inserts
    (one writer owns the store), so no row is counted twice or missed.
    """
    dimensions = ", ".join(rollup.dimensions)
    columns = "".join(
        f"{name} {'String' if name in ('project_id', 'key_id') else 'LowCardinality(String)'},\n"
        for name in rollup.dimensions
    )
    select = f"""
        SELECT toDateTime({rollup.bucket}, 'UTC') AS t, {dimensions},
               count() AS requests,
               countIf(status >= 400) AS errors,
               sum(toUInt64(prompt_tokens)) AS prompt_tokens,
               sum(toUInt64(completion_tokens)) AS completion_tokens,
               sum(cost_usd) AS cost_usd,
               quantilesTDigestIfState(0.5, 0.95)(latency_ms, status < 400) AS latency_ms,
               quantilesTDigestIfState(0.5, 0.95)(ttft_ms, status < 400) AS ttft_ms
        FROM {RAW_TABLE}
        GROUP BY t, {dimensions}"""
    return [
        f"DROP VIEW IF EXISTS {rollup.view}",
        f"""CREATE TABLE IF NOT EXISTS {rollup.table} (
            t DateTime('UTC'),
            {columns}            requests SimpleAggregateFunction(sum, UInt64),
            errors SimpleAggregateFunction(sum, UInt64),
            prompt_tokens SimpleAggregateFunction(sum, UInt64),
            completion_tokens SimpleAggregateFunction(sum, UInt64),
            cost_usd SimpleAggregateFunction(sum, Float64),
            latency_ms AggregateFunction(quantilesTDigestIf(0.5, 0.95), Float64, UInt8),
            ttft_ms AggregateFunction(quantilesTDigestIf(0.5, 0.95), Nullable(Float64), UInt8)
        ) ENGINE = AggregatingMergeTree
        ORDER BY (t, {dimensions})""",
        f"TRUNCATE TABLE {rollup.table}",
        f"INSERT INTO {rollup.table} {select}",
        f"CREATE MATERIALIZED VIEW {rollup.view} TO {rollup.table} AS {select}",
    ]


def floor_s(epoch_s: float, step_s: int) -> int:
    return int(epoch_s // step_s) * step_s


def ceil_s(epoch_s: float, step_s: int) -> int:
    return -int(-epoch_s // step_s) * step_s


def rollup_for(interval: str, group_by: str | None) -> Rollup:
    """The rollup of ``interval`` that holds ``group_by``: the keyless one unless grouping by key."""
    return (ROLLUPS if group_by == "key" else KEYLESS)[interval]


def fitting_rollup(since_s: float, until_s: float, by: str | None = None) -> Rollup:
    """The coarsest rollup whose buckets start at ``since`` and end at ``until`` (5 min if none)."""
    for interval, step_s, _ in reversed(_BUCKETS):
        if since_s % step_s == 0 and until_s % step_s == 0:
            return rollup_for(interval, by)
    return rollup_for("5m", by)


def timeseries_sql(
    metric: str, interval: str, *, since_s: int, until_s: int, group_by: str | None, project_id: str | None
) -> str:
    """One row per group with data: ``g`` (group), ``ts`` (bucket starts, epoch seconds) and
    ``vs`` (values; NaN, a percentile of nothing, as 0). Arrays, so a month of hourly points
    for fifty groups is fifty rows to decode, not 36,000."""
    rollup = rollup_for(interval, group_by)
    group = DIMENSIONS[group_by] if group_by else "''"
    return f"""
        SELECT g, groupArray(t) AS ts, groupArray(v) AS vs FROM (
            SELECT toUnixTimestamp(t) AS t, {group} AS g, {_value(metric)} AS v
            FROM {rollup.table}
            {_where(since_s, until_s, project_id)}
            GROUP BY t, g
        ) GROUP BY g ORDER BY g"""


def top_sql(metric: str, by: str, *, rollup: Rollup, since_s: int, until_s: int, project_id: str | None, limit: int) -> str:
    """The ``limit`` groups of ``by`` with the highest ``metric`` over the range: ``g``, ``v``."""
    return f"""
        SELECT {DIMENSIONS[by]} AS g, {_value(metric)} AS v
        FROM {rollup.table}
        {_where(since_s, until_s, project_id)}
        GROUP BY g ORDER BY v DESC, g LIMIT {int(limit)}"""


def _value(metric: str) -> str:
    return f"round(ifNotFinite(toFloat64({METRICS[metric]}), 0), 6)"


def _where(since_s: int, until_s: int, project_id: str | None) -> str:
    clauses = [f"t >= toDateTime({int(since_s)}, 'UTC')", f"t < toDateTime({int(until_s)}, 'UTC')"]
    if project_id is not None:
        clauses.append(f"project_id = {quote(project_id)}")
    return "WHERE " + " AND ".join(clauses)


def quote(value: str) -> str:
    """A ClickHouse string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
