"""Request metrics: records, the ClickHouse-schema store with its migrations and rollups (5 min,
1 h, 1 d; maintained by ClickHouse), and the Ray actor that owns the store."""

from serve.metrics.actor import ACTOR_NAME, MetricsActor, MetricsClient, MetricsRecorder
from serve.metrics.migrations import migrate
from serve.metrics.records import ModelUsage, Ranking, RequestRecord, Series, TimeSeries, UsageReport
from serve.metrics.rollups import DIMENSIONS, INTERVALS, METRICS
from serve.metrics.store import (
    ChdbBackend,
    ChdbStore,
    ClickHouseHTTPBackend,
    MetricsBackendError,
    MetricsStore,
    open_backend,
)

__all__ = [
    "ACTOR_NAME",
    "ChdbBackend",
    "ChdbStore",
    "ClickHouseHTTPBackend",
    "DIMENSIONS",
    "INTERVALS",
    "METRICS",
    "MetricsActor",
    "MetricsBackendError",
    "MetricsClient",
    "MetricsRecorder",
    "MetricsStore",
    "ModelUsage",
    "Ranking",
    "RequestRecord",
    "Series",
    "TimeSeries",
    "UsageReport",
    "migrate",
    "open_backend",
]
