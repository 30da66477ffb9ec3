"""Request metrics: records, the ClickHouse-schema store with its migrations and rollups (5 min,
1 h, 1 d; maintained by ClickHouse), and the Ray actor that owns the store.

Names are imported lazily, so ``serve.metrics.records`` (and the control API's client) does not
pull in Ray.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ACTOR_NAME": "serve.metrics.actor",
    "MetricsActor": "serve.metrics.actor",
    "MetricsClient": "serve.metrics.actor",
    "MetricsRecorder": "serve.metrics.actor",
    "migrate": "serve.metrics.migrations",
    "ModelUsage": "serve.metrics.records",
    "Ranking": "serve.metrics.records",
    "RequestRecord": "serve.metrics.records",
    "Series": "serve.metrics.records",
    "TimeSeries": "serve.metrics.records",
    "UsageReport": "serve.metrics.records",
    "DIMENSIONS": "serve.metrics.rollups",
    "INTERVALS": "serve.metrics.rollups",
    "METRICS": "serve.metrics.rollups",
    "ChdbBackend": "serve.metrics.store",
    "ChdbStore": "serve.metrics.store",
    "ClickHouseHTTPBackend": "serve.metrics.store",
    "MetricsBackendError": "serve.metrics.store",
    "MetricsStore": "serve.metrics.store",
    "open_backend": "serve.metrics.store",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'serve.metrics' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
