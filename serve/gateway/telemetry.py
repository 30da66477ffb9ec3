"""Metrics of the gateway: per replica at ``/v1/metrics``, and for the whole gateway in Ray.

Every request is observed once, into two sinks with the same names and labels:

- a Prometheus registry of this replica, rendered at ``/v1/metrics`` (one replica's view);
- Ray's metrics (``ray.util.metrics``), when the gateway runs in a Ray Serve replica: Ray's
  metrics agent exports them from every replica of every node on the node's metrics port, where
  Prometheus (and the Ray dashboard's Grafana) sums them into "the gateway". Ray prefixes the
  names with ``ray_``: ``ray_foundry_gateway_requests_total`` and so on.

Names and labels::

    foundry_gateway_requests                 counter    model, provider, project, status
    foundry_gateway_latency_seconds          histogram  model
    foundry_gateway_ttft_seconds             histogram  model
    foundry_gateway_overhead_seconds         histogram  model
    foundry_gateway_tokens                   counter    model, kind (prompt | completion), project
    foundry_gateway_cost_usd                 counter    model, project

``cluster_configs/grafana/`` has dashboards over the Ray names.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_OVERHEAD_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)

_REQUESTS = ("foundry_gateway_requests", "Requests by model, provider, project and status")
_LATENCY = ("foundry_gateway_latency_seconds", "Whole-request latency")
_TTFT = ("foundry_gateway_ttft_seconds", "Time to first token")
_OVERHEAD = ("foundry_gateway_overhead_seconds", "Time spent in the gateway itself (latency minus time waiting on providers)")
_TOKENS = ("foundry_gateway_tokens", "Tokens by model, kind (prompt, completion) and project")
_COST = ("foundry_gateway_cost_usd", "Cost in USD by model and project, from the configured pricing")


class Telemetry:
    """``cluster=True`` (in a Ray worker): also record into Ray's metrics."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, *, cluster: bool = False) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(*_REQUESTS, ["model", "provider", "project", "status"], registry=r)
        self.latency = Histogram(*_LATENCY, ["model"], buckets=_LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram(*_TTFT, ["model"], buckets=_LATENCY_BUCKETS, registry=r)
        self.overhead = Histogram(*_OVERHEAD, ["model"], buckets=_OVERHEAD_BUCKETS, registry=r)
        self.tokens = Counter(*_TOKENS, ["model", "kind", "project"], registry=r)
        self.cost = Counter(*_COST, ["model", "project"], registry=r)
        self.attempts = Counter(
            "foundry_gateway_provider_attempts", "Attempts sent to providers", ["provider"], registry=r
        )
        self._ray = _RayMetrics() if cluster else None
        # (model, provider, project, status) -> its labelled children: labels() cost about as
        # much as the observations themselves; the combinations are as few as the series.
        self._series: dict[tuple[str, str, str, int], _Series] = {}

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
        project: str = "",
        cost_usd: float = 0.0,
    ) -> None:
        project = project or "none"
        overhead_s = max(0.0, overhead_s)
        key = (model, provider, project, status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(self, model, provider, project, str(status))
        series.requests.inc()
        series.latency.observe(latency_s)
        if ttft_s is not None:
            series.child("ttft", self.ttft, model).observe(ttft_s)
        series.overhead.observe(overhead_s)
        if prompt_tokens:
            series.child("prompt", self.tokens, model, "prompt", project).inc(prompt_tokens)
        if completion_tokens:
            series.child("completion", self.tokens, model, "completion", project).inc(completion_tokens)
        if cost_usd:
            series.child("cost", self.cost, model, project).inc(cost_usd)
        if self._ray is not None:
            self._ray.observe(model, provider, project, str(status), latency_s, ttft_s, overhead_s,
                              prompt_tokens, completion_tokens, cost_usd)  # fmt: skip

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Series:
    """The labelled children one combination of labels observes into; the optional ones made
    on first use, so that a series appears in the output when it is first observed, as before."""

    __slots__ = ("requests", "latency", "overhead", "_more")

    def __init__(self, t: Telemetry, model: str, provider: str, project: str, status: str) -> None:
        self.requests = t.requests.labels(model, provider, project, status)
        self.latency = t.latency.labels(model)
        self.overhead = t.overhead.labels(model)
        self._more: dict[str, object] = {}

    def child(self, name: str, metric, *labels: str):
        found = self._more.get(name)
        if found is None:
            found = self._more[name] = metric.labels(*labels)
        return found


class _RayMetrics:
    """The same observations in Ray's metrics, aggregated across replicas by Prometheus."""

    def __init__(self) -> None:
        from ray.util import metrics

        self.requests = metrics.Counter(*_REQUESTS, tag_keys=("model", "provider", "project", "status"))
        self.latency = metrics.Histogram(*_LATENCY, boundaries=list(_LATENCY_BUCKETS), tag_keys=("model",))
        self.ttft = metrics.Histogram(*_TTFT, boundaries=list(_LATENCY_BUCKETS), tag_keys=("model",))
        self.overhead = metrics.Histogram(*_OVERHEAD, boundaries=list(_OVERHEAD_BUCKETS), tag_keys=("model",))
        self.tokens = metrics.Counter(*_TOKENS, tag_keys=("model", "kind", "project"))
        self.cost = metrics.Counter(*_COST, tag_keys=("model", "project"))

    def observe(self, model, provider, project, status, latency_s, ttft_s, overhead_s, prompt, completion, cost):
        by_model = {"model": model}
        self.requests.inc(1, {"model": model, "provider": provider, "project": project, "status": status})
        self.latency.observe(latency_s, by_model)
        if ttft_s is not None:
            self.ttft.observe(ttft_s, by_model)
        self.overhead.observe(overhead_s, by_model)
        if prompt:
            self.tokens.inc(prompt, {"model": model, "kind": "prompt", "project": project})
        if completion:
            self.tokens.inc(completion, {"model": model, "kind": "completion", "project": project})
        if cost:
            self.cost.inc(cost, {"model": model, "project": project})
