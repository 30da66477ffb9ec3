"""vLLM's step statistics become per-runtime Prometheus series (no vLLM needed: the statistics
are plain records, built here as vLLM builds them)."""

from __future__ import annotations

from types import SimpleNamespace

from serve.runtimes.vllm_metrics import VLLMMetrics


def value(text: str, name: str) -> float:
    line = next(x for x in text.splitlines() if x.startswith(name + "{") or x.startswith(name + " "))
    return float(line.rsplit(" ", 1)[1])


def test_step_statistics_become_series_labelled_with_the_runtime():
    metrics = VLLMMetrics("chat")
    scheduler = SimpleNamespace(num_running_reqs=3, num_waiting_reqs=2, kv_cache_usage=0.25)
    iteration = SimpleNamespace(
        time_to_first_tokens_iter=[0.02, 0.04],
        inter_token_latencies_iter=[0.005, 0.006, 0.007],
        num_prompt_tokens=12,
        num_generation_tokens=5,
    )
    metrics.record(scheduler, iteration)
    metrics.record(SimpleNamespace(num_running_reqs=1, num_waiting_reqs=0, kv_cache_usage=0.1), None)
    text = metrics.render().decode()
    assert 'runtime="chat"' in text
    assert value(text, "foundry_runtime_ttft_seconds_count") == 2
    assert abs(value(text, "foundry_runtime_ttft_seconds_sum") - 0.06) < 1e-9
    assert value(text, "foundry_runtime_inter_token_latency_seconds_count") == 3
    assert value(text, "foundry_runtime_requests_running") == 1  # the latest step
    assert value(text, "foundry_runtime_requests_waiting") == 0
    assert value(text, "foundry_runtime_kv_cache_usage_ratio") == 0.1
    prompt = next(x for x in text.splitlines() if x.startswith("foundry_runtime_tokens_total{") and 'kind="prompt"' in x)
    assert prompt.endswith(" 12.0")


def test_each_runtime_has_its_own_registry():
    a, b = VLLMMetrics("a"), VLLMMetrics("b")
    a.record(SimpleNamespace(num_running_reqs=4, num_waiting_reqs=0, kv_cache_usage=0.5), None)
    assert 'runtime="b"' in b.render().decode() and 'runtime="a"' not in b.render().decode()
