"""Request metrics: records, the ClickHouse-schema store, and its Ray actor."""

from serve.metrics.actor import ACTOR_NAME, MetricsActor, MetricsClient, MetricsRecorder
from serve.metrics.records import ModelUsage, RequestRecord, UsageReport
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
    "MetricsActor",
    "MetricsBackendError",
    "MetricsClient",
    "MetricsRecorder",
    "MetricsStore",
    "ModelUsage",
    "RequestRecord",
    "UsageReport",
    "open_backend",
]
