"""The metrics store's schema, as numbered migrations applied once each.

``schema_migrations`` records what a store has; :func:`migrate` applies the rest in order when
the store opens, before it accepts inserts. A migration is recorded after its last statement, so
one cut short by a crash runs again on the next open: each is written to be safe to re-run.

    1  request log (``requests``) and ``benchmarks``, with the columns added before numbering
    2  ``deployment`` column; rollups at 5 min, 1 h and 1 d (:mod:`serve.metrics.rollups`),
       back-filled once from the rows already stored
    3  insert deduplication on the request log and the rollups: a batch sent again with the
       same token (after a write whose answer was lost) is stored once
    4  rollups without the key column
    5  insert deduplication on ``benchmarks`` (a pipeline step re-run after a crash stores once)
    4  rollups without the key dimension (5 min, 1 h, 1 d), back-filled once, deduplicated as in 3
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol

from serve.metrics.rollups import KEYLESS, RAW_TABLE, ROLLUPS, create_statements

TABLE = RAW_TABLE
MIGRATIONS_TABLE = "schema_migrations"
# how many recent insert tokens a table remembers (non-replicated MergeTree deduplication)
DEDUPLICATION_WINDOW = 10_000

BENCH_TABLE = "benchmarks"
# The measured-data schema (tune/'s training data, ../shared/perfdata/measured_serving.csv), so
# measurements of live deployments retrain the predictor. Other columns travel in `extra` (JSON).
BENCH_COLUMNS = {
    "id": "String", "backend": "String", "backend_version": "String", "model_path": "String",
    "system": "String", "precision": "String", "gemm_quant_mode": "String", "moe_quant_mode": "String",
    "isl": "UInt32", "osl": "UInt32", "batch_size": "Float64", "tp_size": "Float64", "pp_size": "Float64",
    "attention_dp_size": "Float64", "moe_tp_size": "Float64", "moe_ep_size": "Float64",
    "silicon_ttft_ms": "Float64", "silicon_tpot_ms": "Float64",
}  # fmt: skip

_REQUESTS = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    request_id String,
    ts DateTime64(3, 'UTC'),
    endpoint LowCardinality(String),
    model LowCardinality(String),
    status UInt16,
    project_id String,
    key_id String,
    provider LowCardinality(String),
    error_type LowCardinality(String),
    prompt_tokens UInt32,
    completion_tokens UInt32,
    ttft_ms Nullable(Float64),
    latency_ms Float64,
    streamed Bool,
    attempts UInt8,
    fallback_used Bool,
    cost_usd Float64
) ENGINE = MergeTree
ORDER BY (model, ts)
"""

_BENCHMARKS = (
    f"CREATE TABLE IF NOT EXISTS {BENCH_TABLE} (ts DateTime64(3, 'UTC'), "
    + ", ".join(f"{name} {kind}" for name, kind in BENCH_COLUMNS.items())
    + ", extra String) ENGINE = MergeTree ORDER BY (model_path, ts)"
)


class _Backend(Protocol):
    def command(self, sql: str) -> None: ...

    def insert_json_rows(self, table: str, payload: bytes) -> None: ...

    def query_rows(self, sql: str) -> list[dict]: ...


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: Callable[[], list[str]]


MIGRATIONS = [
    Migration(1, "request log and benchmarks", lambda: [
        _REQUESTS,
        _BENCHMARKS,
        # columns added before migrations were numbered, for stores created without them
        f"ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS attempts UInt8",
        f"ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS fallback_used Bool",
        f"ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS cost_usd Float64",
    ]),
    Migration(2, "rollups at 5 min, 1 h and 1 d", lambda: [
        # empty for every row written before deployments were recorded
        f"ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS deployment LowCardinality(String)",
        *(statement for rollup in ROLLUPS.values() for statement in create_statements(rollup)),
    ]),
    Migration(3, "insert deduplication", lambda: [
        f"ALTER TABLE {table} MODIFY SETTING non_replicated_deduplication_window = {DEDUPLICATION_WINDOW}"
        for table in (TABLE, *(rollup.table for rollup in ROLLUPS.values()))
    ]),
    Migration(4, "rollups without the key", lambda: [
        *(statement for rollup in KEYLESS.values() for statement in create_statements(rollup)),
        *(f"ALTER TABLE {rollup.table} MODIFY SETTING non_replicated_deduplication_window = {DEDUPLICATION_WINDOW}"
          for rollup in KEYLESS.values()),
    ]),
    Migration(5, "benchmark insert deduplication", lambda: [
        f"ALTER TABLE {BENCH_TABLE} MODIFY SETTING non_replicated_deduplication_window = {DEDUPLICATION_WINDOW}",
    ]),
]  # fmt: skip


def migrate(backend: _Backend) -> list[int]:
    """Apply the migrations ``backend``'s database lacks, in order; return their versions."""
    backend.command(
        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} "
        "(version UInt32, name String, applied_at DateTime64(3, 'UTC')) ENGINE = MergeTree ORDER BY version"
    )
    done = {int(row["version"]) for row in backend.query_rows(f"SELECT version FROM {MIGRATIONS_TABLE}")}
    applied = []
    for migration in MIGRATIONS:
        if migration.version in done:
            continue
        for statement in migration.statements():
            backend.command(statement)
        now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        record = {"version": migration.version, "name": migration.name, "applied_at": now}
        backend.insert_json_rows(MIGRATIONS_TABLE, json.dumps(record).encode())
        applied.append(migration.version)
    return applied
