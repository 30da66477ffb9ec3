"""The gateway's metrics for the whole gateway: two replicas' observations summed in Ray's
metrics, as Prometheus (and the Ray dashboard) scrape them from the node's metrics port."""

from __future__ import annotations

import re
import time

import httpx
import pytest
import ray

from serve.gateway.telemetry import Telemetry

pytestmark = pytest.mark.timeout(300)


@ray.remote(num_cpus=0)
class Replica:
    """Stands where a gateway replica stands: a Ray worker with its own Telemetry."""

    def __init__(self) -> None:
        self.telemetry = Telemetry(cluster=True)

    def serve(self, n: int, project: str) -> None:
        for _ in range(n):
            self.telemetry.observe(
                model="chat", provider="p", status=200, latency_s=0.05, ttft_s=0.01, overhead_s=0.001,
                prompt_tokens=7, completion_tokens=3, project=project, cost_usd=0.5,
            )  # fmt: skip


@pytest.fixture(scope="module")
def metrics_url():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _system_config={"metrics_report_interval_ms": 500})
    node = ray._private.worker.global_worker.node
    yield f"http://{node.node_ip_address}:{node.metrics_export_port}/metrics"
    if started:
        ray.shutdown()


def scrape_sum(url: str, name: str, **labels: str) -> float:
    text = httpx.get(url, timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_two_replicas_add_up_in_rays_metrics(metrics_url):
    a, b = Replica.remote(), Replica.remote()
    ray.get([a.serve.remote(3, "alpha"), b.serve.remote(4, "alpha"), b.serve.remote(2, "beta")])
    deadline = time.monotonic() + 120
    while scrape_sum(metrics_url, "ray_foundry_gateway_requests_total", model="chat") < 9:
        assert time.monotonic() < deadline, "Ray's metrics never showed the gateway's requests"
        time.sleep(0.5)
    assert scrape_sum(metrics_url, "ray_foundry_gateway_requests_total", model="chat", project="alpha", status="200") == 7
    assert scrape_sum(metrics_url, "ray_foundry_gateway_tokens_total", kind="completion") == 27
    assert scrape_sum(metrics_url, "ray_foundry_gateway_cost_usd_total", project="beta") == pytest.approx(1.0)
    assert scrape_sum(metrics_url, "ray_foundry_gateway_latency_seconds_count", model="chat") == 9
    assert re.search(r"ray_foundry_gateway_ttft_seconds_bucket\{.*le=\"0\.025\"", httpx.get(metrics_url).text)


def test_per_replica_metrics_carry_project_and_cost():
    t = Telemetry()
    t.observe(model="m", provider="p", status=429, latency_s=0.1, ttft_s=None, overhead_s=0.0,
              prompt_tokens=0, completion_tokens=0, project="", cost_usd=0.0)  # fmt: skip
    text = t.render().decode()
    assert 'foundry_gateway_requests_total{model="m",project="none",provider="p",status="429"} 1.0' in text
