"""Prometheus metrics of one gateway replica, served at ``/v1/metrics``.

Each replica has its own registry; with several replicas, scrape each replica (or Ray's
metrics endpoint, where Serve's own per-deployment metrics are aggregated).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_OVERHEAD_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


class Telemetry:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "foundry_gateway_requests", "Requests by model, provider and status", ["model", "provider", "status"], registry=r
        )
        self.latency = Histogram(
            "foundry_gateway_latency_seconds", "Whole-request latency", ["model"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.ttft = Histogram(
            "foundry_gateway_ttft_seconds", "Time to first token", ["model"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.overhead = Histogram(
            "foundry_gateway_overhead_seconds",
            "Time spent in the gateway itself (latency minus time waiting on providers)",
            ["model"],
            buckets=_OVERHEAD_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "foundry_gateway_tokens", "Tokens by model and kind (prompt, completion)", ["model", "kind"], registry=r
        )
        self.attempts = Counter(
            "foundry_gateway_provider_attempts", "Attempts sent to providers", ["provider"], registry=r
        )

    def observe(
        self,
        *,
        model: str,
        provider: str,
        status: int,
        latency_s: float,
        ttft_s: float | None,
        overhead_s: float,
        prompt_tokens: int,
        completion_tokens: int,
    ) -> None:
        self.requests.labels(model, provider, str(status)).inc()
        self.latency.labels(model).observe(latency_s)
        if ttft_s is not None:
            self.ttft.labels(model).observe(ttft_s)
        self.overhead.labels(model).observe(max(0.0, overhead_s))
        if prompt_tokens:
            self.tokens.labels(model, "prompt").inc(prompt_tokens)
        if completion_tokens:
            self.tokens.labels(model, "completion").inc(completion_tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
