"""The executor on real DBOS, with SQLite and with the PostgreSQL server of tests/conftest.py:
parallel branches, retries with backoff, conditions, events, cancel, fail-fast, optimistic
locking, progress."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from dbos import DBOS

from pipelines import Conflict, InvalidParams, NotFound
from pipelines.engine import step_workflow_id
from tests.fakes.http_receiver import HttpReceiver
from tests.integration.pipelines.harness import database_url, finished, running_engine, wait_run

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]


@pytest_asyncio.fixture(
    scope="module", loop_scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def engine(request, tmp_path_factory):
    postgres = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    url = database_url(request.param, tmp_path_factory.mktemp("pipelines"), postgres)
    async with running_engine(url) as running:
        yield running


@pytest.fixture(scope="module")
def receiver():
    with HttpReceiver() as rx:
        yield rx


def ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


async def run_to_end(engine, definition: dict, params: dict | None = None) -> dict:
    created = await engine.create_pipeline(definition)
    run = await engine.start_run(created["id"], params or {})
    return await wait_run(engine, run["id"], finished)


async def test_parallel_branches_overlap_and_joins_wait_for_both(engine):
    run = await run_to_end(engine, {
        "name": "diamond",
        "steps": [
            {"id": "a", "action": "busy", "params": {"seconds": 0.1}},
            {"id": "b", "action": "busy", "params": {"seconds": 1.0}, "depends_on": ["a"]},
            {"id": "c", "action": "busy", "params": {"seconds": 1.0}, "depends_on": ["a"]},
            {"id": "d", "action": "busy", "params": {"seconds": 0.1}, "depends_on": ["b", "c"]},
        ],
    })  # fmt: skip
    assert run["status"] == "succeeded", run
    out = {sid: step["outputs"] for sid, step in run["steps"].items()}
    # b and c ran at the same time: each started before the other finished
    assert out["b"]["started"] < out["c"]["finished"] and out["c"]["started"] < out["b"]["finished"]
    assert out["d"]["started"] >= max(out["b"]["finished"], out["c"]["finished"])
    assert min(out["b"]["started"], out["c"]["started"]) >= out["a"]["finished"]
    assert run["outputs"] == {"d": out["d"]}
    assert run["progress"] == 100.0 and all(s["attempts"] == 1 for s in run["steps"].values())


async def test_max_parallel_steps_bounds_concurrency(engine):
    steps = [{"id": f"s{i}", "action": "busy", "params": {"seconds": 0.3}} for i in range(4)]
    run = await run_to_end(engine, {"name": "bounded", "settings": {"max_parallel_steps": 2}, "steps": steps})
    spans = sorted((s["outputs"]["started"], s["outputs"]["finished"]) for s in run["steps"].values())
    for start, _ in spans:  # at no start were more than 2 running (this one included)
        assert sum(1 for s, f in spans if s <= start < f) <= 2


async def test_retries_back_off_with_the_same_idempotency_key(engine, receiver):
    path = f"/flaky-{uuid.uuid4().hex[:8]}"
    receiver.fail_first(path, 2)
    run = await run_to_end(engine, {
        "name": "retry",
        "steps": [{
            "id": "call", "action": "http_request",
            "params": {"method": "POST", "url": receiver.url + path, "json": {"n": 1}},
            "retry": {"max_attempts": 3, "backoff_s": 0.3, "multiplier": 2, "jitter": 0},
        }],
    })  # fmt: skip
    assert run["status"] == "succeeded", run
    assert run["steps"]["call"]["attempts"] == 3
    assert run["steps"]["call"]["outputs"]["status"] == 200
    calls = receiver.received(path)
    assert len(calls) == 3 and receiver.keys(path) == {f"{run['id']}:call"}
    gaps = [b.at - a.at for a, b in zip(calls, calls[1:])]
    assert gaps[0] >= 0.3 and gaps[1] >= 0.6, gaps  # exponential: 0.3 s, then 0.6 s


async def test_a_step_out_of_attempts_fails_the_run_and_skips_its_dependents(engine):
    run = await run_to_end(engine, {
        "name": "failing",
        "settings": {"fail_fast": False, "retry": {"max_attempts": 2, "backoff_s": 0.05}},
        "steps": [
            {"id": "bad", "action": "fail", "params": {"message": "no luck"}},
            {"id": "after", "action": "log", "params": {"message": "x"}, "depends_on": ["bad"]},
            {"id": "other", "action": "set_output", "params": {"v": 1}},
            {"id": "tolerant", "action": "fail", "on_failure": "continue", "retry": {"max_attempts": 1}},
            {"id": "after_tolerant", "action": "set_output", "params": {"v": 2}, "depends_on": ["tolerant"]},
        ],
    })  # fmt: skip
    steps = run["steps"]
    assert run["status"] == "failed" and "bad" in run["error"] and "no luck" in run["error"]
    assert (steps["bad"]["status"], steps["bad"]["attempts"], steps["bad"]["error"]) == ("failed", 2, "no luck")
    assert steps["after"]["status"] == "skipped"
    assert steps["other"]["status"] == "succeeded"
    assert steps["tolerant"]["status"] == "failed" and steps["after_tolerant"]["status"] == "succeeded"


async def test_conditions_skip_steps_and_what_depends_only_on_them(engine):
    run = await run_to_end(engine, {
        "name": "conditional",
        "parameters": {"env": {"type": "string", "default": "dev"}, "replicas": {"type": "integer", "default": 2}},
        "steps": [
            {"id": "size", "action": "set_output", "params": {"replicas": "{{ params.replicas * 2 }}"}},
            {"id": "prod_only", "action": "log", "params": {"message": "prod"}, "condition": "params.env == 'prod'"},
            {"id": "after_prod", "action": "log", "params": {"message": "x"}, "depends_on": ["prod_only"]},
            {"id": "big", "action": "set_output", "params": {"n": "{{ steps.size.outputs.replicas }}"},
             "depends_on": ["size"], "condition": "{{ steps.size.outputs.replicas > 3 }}"},
            {"id": "join", "action": "set_output", "params": {"ok": True}, "depends_on": ["prod_only", "big"]},
        ],
    }, {"replicas": "3"})  # fmt: skip
    steps = run["steps"]
    assert run["status"] == "succeeded"
    assert steps["prod_only"]["status"] == "skipped" and steps["prod_only"]["error"] == "condition is false"
    assert steps["after_prod"]["status"] == "skipped"
    assert steps["big"]["status"] == "succeeded" and steps["big"]["outputs"] == {"n": 6}
    assert steps["join"]["status"] == "succeeded"  # one of its dependencies ran
    assert run["params"] == {"env": "dev", "replicas": 3}


async def test_an_event_completes_the_waiting_step(engine):
    created = await engine.create_pipeline({
        "name": "approval",
        "steps": [
            {"id": "ask", "action": "wait_for_event", "params": {"name": "approve", "timeout_s": 120}},
            {"id": "go", "action": "set_output", "params": {"by": "{{ steps.ask.outputs.by }}"}, "depends_on": ["ask"]},
        ],
    })  # fmt: skip
    run = await engine.start_run(created["id"])
    run = await wait_run(engine, run["id"], lambda r: r["steps"]["ask"]["status"] == "waiting")
    assert run["status"] == "waiting"
    with pytest.raises(NotFound, match="no step"):
        await engine.send_event(run["id"], "reject", {})
    await engine.send_event(run["id"], "approve", {"by": "ops"})
    with pytest.raises(Conflict, match="already sent"):
        await engine.send_event(run["id"], "approve", {"by": "someone else"})
    run = await wait_run(engine, run["id"], finished)
    assert run["status"] == "succeeded"
    assert run["steps"]["ask"]["outputs"] == {"by": "ops"} and run["steps"]["go"]["outputs"] == {"by": "ops"}
    assert run["events"] == ["approve"]


async def test_an_event_sent_before_the_step_waits_is_kept(engine):
    created = await engine.create_pipeline({
        "name": "early-event",
        "steps": [
            {"id": "first", "action": "busy", "params": {"seconds": 0.5}},
            {"id": "ask", "action": "wait_for_event", "params": {"name": "go"}, "depends_on": ["first"]},
        ],
    })  # fmt: skip
    run = await engine.start_run(created["id"])
    await engine.send_event(run["id"], "go", {"early": True})
    run = await wait_run(engine, run["id"], finished)
    assert run["status"] == "succeeded" and run["steps"]["ask"]["outputs"] == {"early": True}


async def test_cancel_stops_running_and_waiting_steps(engine):
    created = await engine.create_pipeline({
        "name": "cancellable",
        "steps": [
            {"id": "long", "action": "busy", "params": {"seconds": 60}},
            {"id": "nap", "action": "sleep", "params": {"seconds": 60}},
            {"id": "ask", "action": "wait_for_event", "params": {"name": "never"}},
            {"id": "later", "action": "log", "params": {"message": "x"}, "depends_on": ["long"]},
        ],
    })  # fmt: skip
    run = await engine.start_run(created["id"])
    run = await wait_run(engine, run["id"], lambda r: r["steps"]["long"]["status"] == "running"
                         and r["steps"]["ask"]["status"] == "waiting" and r["steps"]["nap"]["status"] == "waiting")  # fmt: skip
    cancelled = await engine.cancel_run(run["id"])
    assert cancelled["status"] == "cancelled"
    assert {s["status"] for s in cancelled["steps"].values()} == {"cancelled"}
    with pytest.raises(Conflict, match="already cancelled"):
        await engine.cancel_run(run["id"])
    with pytest.raises(Conflict):
        await engine.send_event(run["id"], "never", {})
    for step in ("long", "nap", "ask"):  # DBOS stopped them too
        status = await DBOS.get_workflow_status_async(step_workflow_id(run["id"], step))
        assert status.status == "CANCELLED"
    assert await DBOS.get_workflow_status_async(step_workflow_id(run["id"], "later")) is None


async def test_fail_fast_cancels_running_siblings(engine):
    run = await run_to_end(engine, {
        "name": "fail-fast",
        "steps": [
            {"id": "slow", "action": "busy", "params": {"seconds": 60}},
            {"id": "bad", "action": "fail", "params": {"message": "broken"}},
        ],
    })  # fmt: skip
    assert run["status"] == "failed"
    assert run["steps"]["bad"]["status"] == "failed" and run["steps"]["slow"]["status"] == "cancelled"
    assert ts(run["finished_at"]) - ts(run["started_at"]) < 30


async def test_conflicting_updates_have_one_winner(engine):
    created = await engine.create_pipeline({
        "name": "race",
        "steps": [{"id": "ask", "action": "wait_for_event", "params": {"name": "go"}}],
    })
    run = await engine.start_run(created["id"])
    run = await wait_run(engine, run["id"], lambda r: r["steps"]["ask"]["status"] == "waiting")
    version = run["version"]
    outcomes = await asyncio.gather(
        engine.send_event(run["id"], "go", {"x": 1}, expected_version=version),
        engine.cancel_run(run["id"], expected_version=version),
        return_exceptions=True,
    )
    assert sorted(type(o).__name__ for o in outcomes) == ["Conflict", "dict"], outcomes
    with pytest.raises(Conflict):
        await engine.cancel_run(run["id"], expected_version=version)

    run = await engine.start_run(created["id"])  # two cancels, no version given
    with pytest.raises(Conflict, match="version"):
        await engine.cancel_run(run["id"], expected_version=0)  # stale
    outcomes = await asyncio.gather(engine.cancel_run(run["id"]), engine.cancel_run(run["id"]), return_exceptions=True)
    assert sorted(type(o).__name__ for o in outcomes) == ["Conflict", "dict"], outcomes


async def test_progress_is_weighted_never_goes_back_and_has_an_eta(engine):
    created = await engine.create_pipeline({
        "name": "weighted",
        "steps": [
            {"id": "small", "action": "busy", "params": {"seconds": 0.2}, "weight": 1},
            {"id": "large", "action": "busy", "params": {"seconds": 1.5}, "weight": 3, "depends_on": ["small"]},
        ],
    })  # fmt: skip
    run = await engine.start_run(created["id"])
    run = await wait_run(engine, run["id"], finished)
    values = [r["progress"] for r in run["seen"]]
    assert values == sorted(values) and values[-1] == 100.0
    assert 25.0 in values  # small done (weight 1 of 4), large not started
    assert any(62.0 <= v <= 63.0 for v in values)  # large reported 50%: (1 + 3 * 0.5) / 4
    assert any(r["eta_s"] is not None and r["eta_s"] > 0 for r in run["seen"])


async def test_run_params_are_checked_against_the_definition(engine):
    created = await engine.create_pipeline({
        "name": "typed",
        "parameters": {"n": {"type": "integer", "required": True}},
        "steps": [{"id": "s", "action": "set_output", "params": {"n": "{{ params.n }}"}}],
    })
    with pytest.raises(InvalidParams, match="missing required parameter 'n'"):
        await engine.start_run(created["id"], {})
    with pytest.raises(InvalidParams, match="must be integer"):
        await engine.start_run(created["id"], {"n": "many"})
    with pytest.raises(InvalidParams, match="unknown parameter 'm'"):
        await engine.start_run(created["id"], {"n": 1, "m": 2})


async def test_definitions_are_versioned_by_name(engine):
    first = await engine.create_pipeline({"name": "versioned", "steps": [{"id": "a", "action": "log", "params": {"message": 1}}]})
    second = await engine.create_pipeline({"name": "versioned", "steps": [{"id": "b", "action": "log", "params": {"message": 2}}]})
    assert first["id"] == second["id"] and (first["version"], second["version"]) == (1, 2)
    listed = {p["name"]: p for p in await engine.list_pipelines()}
    assert listed["versioned"]["version"] == 2
    assert (await engine.get_pipeline(first["id"], 1))["definition"]["steps"][0]["id"] == "a"


async def test_timeouts_per_attempt_and_per_run(engine):
    run = await run_to_end(engine, {
        "name": "slow-attempts",
        "steps": [{"id": "slow", "action": "busy", "params": {"seconds": 30}, "timeout_s": 0.5,
                   "retry": {"max_attempts": 2, "backoff_s": 0.05}}],
    })  # fmt: skip
    step = run["steps"]["slow"]
    assert run["status"] == "failed" and step["attempts"] == 2 and "timeout_s (0.5s)" in step["error"]

    run = await run_to_end(engine, {
        "name": "slow-run",
        "settings": {"timeout_s": 1},
        "steps": [
            {"id": "long", "action": "busy", "params": {"seconds": 30}},
            {"id": "after", "action": "log", "params": {"message": "x"}, "depends_on": ["long"]},
        ],
    })  # fmt: skip
    assert run["status"] == "failed" and "timeout_s (1s)" in run["error"]
    assert run["steps"]["long"]["status"] == "cancelled" and run["steps"]["after"]["status"] == "cancelled"
    assert ts(run["finished_at"]) - ts(run["started_at"]) < 20


async def test_wait_until_and_transform(engine):
    at = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    run = await run_to_end(engine, {
        "name": "until",
        "parameters": {"at": {"type": "string"}},
        "steps": [
            {"id": "later", "action": "wait_until", "params": {"at": "{{ params.at }}"}},
            {"id": "sum", "action": "transform", "depends_on": ["later"],
             "params": {"input": [1, 2, 3], "expression": "input | sum"}},
        ],
    }, {"at": at})  # fmt: skip
    assert run["status"] == "succeeded", run
    assert ts(run["steps"]["later"]["finished_at"]) >= datetime.fromisoformat(at).timestamp()
    assert run["steps"]["sum"]["outputs"] == {"result": 6}
    assert any(r["steps"]["later"]["status"] == "waiting" for r in run["seen"])
