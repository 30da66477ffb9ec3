"""vLLM's own engine metrics, per runtime, in the Prometheus text format.

vLLM hands every engine step's statistics to its stat loggers; ours records them in a registry
of the replica, labelled with the runtime's name. The gateway appends every local runtime's
metrics to its own at ``/v1/metrics``::

    foundry_runtime_ttft_seconds{runtime}              histogram: time to first token, in the engine
    foundry_runtime_inter_token_latency_seconds{runtime}  histogram: gap between tokens of a stream
    foundry_runtime_kv_cache_usage_ratio{runtime}      gauge: KV-cache blocks in use, 0..1
    foundry_runtime_requests_running{runtime}          gauge
    foundry_runtime_requests_waiting{runtime}          gauge
    foundry_runtime_tokens_total{runtime,kind}         counter: prompt / generation tokens

The engine's step statistics are an unstable vLLM interface; only this module reads them.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class VLLMMetrics:
    def __init__(self, runtime: str) -> None:
        self.runtime = runtime
        r = self.registry = CollectorRegistry()
        labels = ["runtime"]
        self.ttft = Histogram(
            "foundry_runtime_ttft_seconds", "Time to first token in the engine", labels, buckets=_LATENCY_BUCKETS, registry=r
        ).labels(runtime)
        self.itl = Histogram(
            "foundry_runtime_inter_token_latency_seconds",
            "Gap between consecutive tokens of a stream",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        ).labels(runtime)
        self.kv_cache = Gauge(
            "foundry_runtime_kv_cache_usage_ratio", "KV-cache blocks in use (0..1)", labels, registry=r
        ).labels(runtime)
        self.running = Gauge("foundry_runtime_requests_running", "Requests running", labels, registry=r).labels(runtime)
        self.waiting = Gauge("foundry_runtime_requests_waiting", "Requests waiting", labels, registry=r).labels(runtime)
        tokens = Counter("foundry_runtime_tokens", "Tokens processed by kind", ["runtime", "kind"], registry=r)
        self.prompt_tokens, self.generation_tokens = tokens.labels(runtime, "prompt"), tokens.labels(runtime, "generation")

    def record(self, scheduler_stats: Any, iteration_stats: Any) -> None:
        if scheduler_stats is not None:
            self.running.set(scheduler_stats.num_running_reqs)
            self.waiting.set(scheduler_stats.num_waiting_reqs)
            self.kv_cache.set(scheduler_stats.kv_cache_usage)
        if iteration_stats is not None:
            for seconds in iteration_stats.time_to_first_tokens_iter:
                self.ttft.observe(seconds)
            for seconds in iteration_stats.inter_token_latencies_iter:
                self.itl.observe(seconds)
            self.prompt_tokens.inc(iteration_stats.num_prompt_tokens)
            self.generation_tokens.inc(iteration_stats.num_generation_tokens)

    def stat_logger(self, vllm_config: Any, engine_index: int = 0) -> Any:
        """A per-engine stat-logger factory for ``AsyncLLM(stat_loggers=[...])``."""
        return _logger_class()(self)

    def render(self) -> bytes:
        return generate_latest(self.registry)


_LOGGER_CLASS: type | None = None


def _logger_class() -> type:
    """vLLM's StatLoggerBase subclass, defined on first use so this module imports without vLLM."""
    global _LOGGER_CLASS
    if _LOGGER_CLASS is None:
        from vllm.v1.metrics.loggers import StatLoggerBase

        class _Recorder(StatLoggerBase):
            def __init__(self, metrics: VLLMMetrics) -> None:
                self._metrics = metrics

            def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx: int = 0) -> None:
                self._metrics.record(scheduler_stats, iteration_stats)

            def log_engine_initialized(self) -> None:
                pass

        _LOGGER_CLASS = _Recorder
    return _LOGGER_CLASS
