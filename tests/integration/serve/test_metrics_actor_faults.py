"""The metrics actor killed while gateways record: Ray restarts it, the recorders keep their
rows meanwhile and send them again, and every row is stored exactly once."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone

import pytest
import ray

from serve.metrics import MetricsRecorder, RequestRecord
from serve.metrics.actor import MetricsClient, start_metrics_actor

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def ray_cluster():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


def rec(i: int) -> RequestRecord:
    return RequestRecord(
        request_id=f"r{i}", ts=datetime.now(timezone.utc), endpoint="chat.completions", model="m", status=200,
        prompt_tokens=3, completion_tokens=2, latency_ms=1.0,
    )  # fmt: skip


async def test_rows_survive_a_killed_metrics_actor_once_each(ray_cluster, tmp_path):
    name = f"foundry-metrics-test-{uuid.uuid4().hex[:8]}"
    actor = start_metrics_actor(name=name, namespace="foundry-test", backend="embedded", path=str(tmp_path / "m"), url=None)
    client = MetricsClient(actor)
    await asyncio.wait_for(actor.ready.remote(), 120)
    recorders = [MetricsRecorder(client, interval_s=0.05, max_rows=20) for _ in range(2)]  # two "replicas"
    sent = 0
    try:
        for i in range(300):
            recorders[i % 2].record(rec(i))
            sent += 1
            if i == 100:
                ray.kill(actor, no_restart=False)  # as if its process died; Ray restarts it
            await asyncio.sleep(0.005)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 180
        while any(r.waiting for r in recorders):
            assert loop.time() < deadline, f"rows still waiting: {[r.waiting for r in recorders]}"
            await asyncio.sleep(0.2)
        assert await client.count() == sent  # none lost, none doubled
    finally:
        for r in recorders:
            await r.close()
        await asyncio.wait_for(actor.close.remote(), 60)
        ray.kill(actor, no_restart=True)
