"""The optimizer's pipeline actions on a real engine: `simulate` runs the search and outputs the
chosen configuration; `benchmark` measures an OpenAI-compatible endpoint (the seeded fake)."""

from __future__ import annotations

import pytest
import pytest_asyncio

import control.pipeline_actions  # noqa: F401  (registers simulate and benchmark)
from pipelines import default_registry
from tests.fakes.upstreams import OpenAIUpstream
from tests.integration.pipelines.harness import database_url, finished, running_engine, wait_run

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(600)]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine(tmp_path_factory):
    async with running_engine(database_url("sqlite", tmp_path_factory.mktemp("actions"), None), default_registry) as e:
        yield e


async def run(engine, definition: dict) -> dict:
    created = await engine.create_pipeline(definition)
    started = await engine.start_run(created["id"])
    return await wait_run(engine, started["id"], finished, timeout_s=300)


async def test_simulate_outputs_the_chosen_configuration(engine):
    done = await run(engine, {
        "name": "plan",
        "steps": [
            {"id": "plan", "action": "simulate", "params": {
                "model": "meta-llama/Llama-3.1-8B-Instruct", "gpus": ["h100_sxm"], "num_gpus": 2, "isl": 1024,
                "osl": 256, "concurrency": 16, "slo_ttft_ms": 2000, "slo_tpot_ms": 60, "search": "grid"}},
            {"id": "use", "action": "set_output", "depends_on": ["plan"],
             "params": {"gpu": "{{ steps.plan.outputs.best.gpu }}", "tp": "{{ steps.plan.outputs.best.tp }}"}},
        ],
    })  # fmt: skip
    assert done["status"] == "succeeded", done
    best = done["steps"]["plan"]["outputs"]["best"]
    assert best["gpu"] == "h100_sxm" and done["steps"]["use"]["outputs"] == {"gpu": best["gpu"], "tp": best["tp"]}
    assert done["steps"]["plan"]["outputs"]["pareto_front"]


async def test_simulate_refuses_an_unknown_gpu_without_retrying(engine):
    done = await run(engine, {
        "name": "bad-plan",
        "settings": {"retry": {"max_attempts": 3, "backoff_s": 0}},
        "steps": [{"id": "plan", "action": "simulate", "params": {
            "model": "meta-llama/Llama-3.1-8B-Instruct", "gpus": "no_such_gpu", "num_gpus": 1, "isl": 8, "osl": 8,
            "concurrency": 1, "slo_ttft_ms": 100, "slo_tpot_ms": 10}}],
    })  # fmt: skip
    assert done["status"] == "failed" and done["steps"]["plan"]["attempts"] == 1
    assert "no_such_gpu" in done["steps"]["plan"]["error"]


async def test_benchmark_measures_an_endpoint(engine):
    with OpenAIUpstream(seed=3, latency_s=0.001) as upstream:
        done = await run(engine, {
            "name": "measure",
            "steps": [{"id": "bench", "action": "benchmark", "params": {
                "base_url": upstream.url, "model": "m", "isl": 16, "osl": 8, "concurrency": [1, 2],
                "requests": 4, "store": False}}],
        })  # fmt: skip
        assert upstream.request_count == 8
    assert done["status"] == "succeeded", done
    rows = done["steps"]["bench"]["outputs"]["rows"]
    assert [r["batch_size"] for r in rows] == [1, 2] and all(r["silicon_ttft_ms"] > 0 for r in rows)
    assert done["steps"]["bench"]["outputs"]["stored"] == 0
