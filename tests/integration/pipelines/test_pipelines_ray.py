"""Pipelines on a real local Ray: ``run_on: ray`` steps run as Ray tasks in other processes
(plugins configured there, progress streamed back), a worker that dies is one failed attempt
that the step's retry policy retries (Ray does not retry it too), a cancelled run stops its
task's worker; and a pipeline executor actor killed mid-run is restarted by Ray and finishes
the run on its own, with no call to it."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from pathlib import Path

import pytest
import pytest_asyncio
import ray

from pipelines import ActionRegistry
from pipelines.actor import PipelineExecutor
from pipelines.builtin_actions import register_builtins
from pipelines.store import RunStore
from tests.fakes.http_receiver import HttpReceiver
from tests.integration.pipelines import ray_plugin
from tests.integration.pipelines.harness import WAIT_TIMEOUT_S, finished, running_engine, wait_run

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(400)]

PLUGIN = "tests.integration.pipelines.ray_plugin"


@pytest.fixture(scope="module")
def ray_cluster():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def receiver():
    with HttpReceiver() as rx:
        yield rx


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine(ray_cluster, tmp_path_factory):
    actions = ActionRegistry()
    register_builtins(actions)
    actions.register("test_where", ray_plugin.where)
    actions.register("test_call", ray_plugin.call)
    url = f"sqlite:///{tmp_path_factory.mktemp('pipelines-ray') / 'pipelines.db'}"
    async with running_engine(url, actions, plugins={PLUGIN: {"marker": "from-the-executor"}}) as running:
        yield running


async def run_to_end(engine, definition: dict) -> dict:
    created = await engine.create_pipeline(definition)
    run = await engine.start_run(created["id"], {})
    return await wait_run(engine, run["id"], finished)


async def test_a_ray_step_runs_in_a_worker_with_the_plugins_and_streams_progress(engine):
    run = await run_to_end(engine, {
        "name": "ray-where",
        "steps": [
            {"id": "here", "action": "test_where"},
            {"id": "there", "action": "test_where", "run_on": "ray", "depends_on": ["here"]},
        ],
    })  # fmt: skip
    assert run["status"] == "succeeded", run
    here, there = run["steps"]["here"]["outputs"], run["steps"]["there"]["outputs"]
    assert here["pid"] == os.getpid() and there["pid"] != os.getpid()
    assert there["configured"] == "from-the-executor" and there["key"] == f"{run['id']}:there"
    assert any(seen["steps"]["there"]["progress"] == 50 for seen in run["seen"])  # reported in the worker


async def test_a_dying_worker_is_one_attempt_retried_by_the_step_policy_not_by_ray(engine, receiver):
    run = await run_to_end(engine, {
        "name": "ray-crash",
        "steps": [{
            "id": "call", "action": "test_call", "run_on": "ray",
            "params": {"url": f"{receiver.url}/crash", "crash": True},
            "retry": {"max_attempts": 3, "backoff_s": 0.1, "jitter": 0},
        }],
    })  # fmt: skip
    step = run["steps"]["call"]
    assert run["status"] == "failed" and step["attempts"] == 3, run
    assert "the Ray task of the attempt failed: WorkerCrashedError" in step["error"]
    calls = receiver.received("/crash")
    assert len(calls) == 3  # Ray's own retries would have made 12
    assert receiver.keys("/crash") == {f"{run['id']}:call"}
    assert len({c.body["pid"] for c in calls}) == 3 and os.getpid() not in {c.body["pid"] for c in calls}


async def test_cancelling_a_run_stops_its_ray_task(engine, receiver):
    receiver.hold("/hold")
    try:
        created = await engine.create_pipeline({
            "name": "ray-cancel",
            "steps": [{"id": "call", "action": "test_call", "run_on": "ray", "params": {"url": f"{receiver.url}/hold"}}],
        })  # fmt: skip
        run = await engine.start_run(created["id"], {})
        (request,) = await asyncio.to_thread(receiver.wait_for, "/hold", 1, WAIT_TIMEOUT_S)
        cancelled = await engine.cancel_run(run["id"])
        assert cancelled["status"] == "cancelled"
        await wait_until_gone(request.body["pid"])  # the worker holding the request was stopped
    finally:
        receiver.release("/hold")


async def test_a_ray_step_past_its_timeout_is_stopped_and_fails(engine, receiver):
    receiver.hold("/timeout")
    try:
        created = await engine.create_pipeline({
            "name": "ray-timeout",
            "steps": [{"id": "call", "action": "test_call", "run_on": "ray", "timeout_s": 10,
                       "params": {"url": f"{receiver.url}/timeout"}}],
        })  # fmt: skip
        run = await engine.start_run(created["id"], {})
        (request,) = await asyncio.to_thread(receiver.wait_for, "/timeout", 1, WAIT_TIMEOUT_S)
        run = await wait_run(engine, run["id"], finished)
        assert run["status"] == "failed" and "longer than timeout_s (10s)" in run["steps"]["call"]["error"], run
        await wait_until_gone(request.body["pid"])
    finally:
        receiver.release("/timeout")


async def wait_until_gone(pid: int) -> None:
    deadline = time.monotonic() + WAIT_TIMEOUT_S
    while Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid):
        assert time.monotonic() < deadline, f"process {pid} still runs"
        await asyncio.sleep(0.1)  # polling a condition, bounded by the deadline


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:", 1)[1].splitlines()[0].lower()
    except (OSError, IndexError):
        return "zombie"


async def test_a_killed_executor_actor_is_restarted_and_finishes_its_runs_on_its_own(ray_cluster, receiver, tmp_path):
    url = f"sqlite:///{tmp_path / 'pipelines.db'}"
    executor = PipelineExecutor.options(name=f"pipelines-test-{uuid.uuid4().hex[:8]}").remote(
        url, f"test-{uuid.uuid4().hex[:8]}", {PLUGIN: {"marker": "actor"}}
    )
    receiver.hold("/slow")
    try:
        await asyncio.wait_for(executor.ready.remote(), WAIT_TIMEOUT_S)
        created = await executor.call.remote("create_pipeline", {
            "name": "restart",
            "steps": [
                {"id": "before", "action": "test_where"},
                {"id": "slow", "action": "test_call", "params": {"url": f"{receiver.url}/slow"}, "depends_on": ["before"]},
                {"id": "after", "action": "test_where", "depends_on": ["slow"]},
            ],
        })  # fmt: skip
        run = await executor.call.remote("start_run", created["id"], {})
        (request,) = await asyncio.to_thread(receiver.wait_for, "/slow", 1, WAIT_TIMEOUT_S)
        first_pid = request.body["pid"]
        os.kill(first_pid, signal.SIGKILL)  # the executor's process, mid-step
    finally:
        receiver.release("/slow")
    try:
        done = await poll_store(url, run["id"])  # the database only: a call to the actor would start it
    finally:
        ray.kill(executor, no_restart=True)
    assert done["status"] == "succeeded", done
    steps = done["steps"]
    assert steps["before"]["outputs"]["pid"] == first_pid  # done before the kill: not run again
    assert steps["after"]["outputs"]["pid"] not in (first_pid, os.getpid())  # the restarted actor
    assert [r.body["pid"] for r in receiver.received("/slow")][0] == first_pid
    assert len(receiver.received("/slow")) == 2 and receiver.keys("/slow") == {f"{run['id']}:slow"}


async def poll_store(url: str, run_id: str) -> dict:
    store = RunStore(url)
    try:
        deadline = time.monotonic() + WAIT_TIMEOUT_S * 2
        while True:
            run = await store.run(run_id)
            if finished(run):
                return run
            assert time.monotonic() < deadline, f"the run did not finish: {run}"
            await asyncio.sleep(0.2)  # polling a condition, bounded by the deadline
    finally:
        await store.close()
