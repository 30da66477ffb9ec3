"""One row per gateway request, and what the store reports from those rows: the usage report,
time series and rankings (the last two from the rollups)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    ts: datetime  # UTC, when the request arrived
    endpoint: str  # chat.completions | completions | embeddings | models
    model: str
    status: int  # HTTP status returned to the client
    project_id: str = ""
    key_id: str = ""
    provider: str = ""  # e.g. "local:foundry-tiny"
    error_type: str = ""  # OpenAI error type, empty on success
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms: float | None = None
    latency_ms: float = 0.0
    streamed: bool = False
    attempts: int = 0  # provider attempts (retries and fallbacks included)
    fallback_used: bool = False  # served by a fallback model
    cost_usd: float = 0.0  # from the serving model's pricing
    deployment: str = ""  # the deployment that served it, where one is known

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(slots=True)
class ModelUsage:
    model: str
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None


@dataclass(slots=True)
class UsageReport:
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float = 0.0
    models: list[ModelUsage] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(slots=True)
class Series:
    """One group's values, one per bucket start (UTC), oldest first; empty buckets are 0."""

    group: str
    points: list[tuple[datetime, float]]


@dataclass(slots=True)
class TimeSeries:
    metric: str
    interval: str
    since: datetime  # the first bucket's start
    until: datetime  # the end of the last bucket
    series: list[Series]


@dataclass(slots=True)
class Ranking:
    """Groups ordered by a metric over ``[since, until)``, highest first."""

    metric: str
    by: str
    since: datetime
    until: datetime
    interval: str  # the rollup that answered
    data: list[tuple[str, float]]
