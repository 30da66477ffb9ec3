"""/api/pipelines over HTTP in-process: the contract's JSON shapes, the error shape, 409s, the
event stream; the executor is a real engine on DBOS (SQLite)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import pytest_asyncio

from control.app import create_app
from control.db import migrate
from control.keys import bootstrap_admin
from tests.integration.pipelines.harness import database_url, running_engine

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]

RUN_KEYS = {"id", "pipeline_id", "status", "progress", "params", "outputs", "steps", "version"}
STEP_KEYS = {"status", "attempts", "started_at", "finished_at", "outputs", "error"}
APPROVAL = {
    "name": "approval",
    "parameters": {"who": {"type": "string", "default": "ops"}},
    "steps": [
        {"id": "ask", "action": "wait_for_event", "params": {"name": "approve"}},
        {"id": "done", "action": "set_output", "params": {"by": "{{ steps.ask.outputs.by }}", "who": "{{ params.who }}"},
         "depends_on": ["ask"]},
    ],
}  # fmt: skip


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipelines-api")
    control_url = f"sqlite:///{tmp / 'foundry.db'}"
    await migrate(control_url)
    key = await bootstrap_admin(control_url, None)
    async with running_engine(database_url("sqlite", tmp, None)) as engine:
        app = create_app(database_url=control_url, usage=None, pipelines=engine)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(
                transport=transport, base_url="http://control", headers={"Authorization": f"Bearer {key}"}, timeout=60
            ) as client:
                yield client


async def wait_for(client, run_id: str, predicate, timeout_s: float = 60.0) -> dict:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        run = (await client.get(f"/pipelines/runs/{run_id}")).json()
        if predicate(run):
            return run
        assert loop.time() < deadline, run
        await asyncio.sleep(0.05)  # polling a condition, bounded by the deadline


def sse(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":"))
        if "event" in lines:
            events.append((lines["event"], json.loads(lines["data"])))
    return events


async def test_a_definition_runs_to_completion_with_an_event_and_a_stream(api):
    created = await api.post("/pipelines", json=APPROVAL)
    assert created.status_code == 201 and {"id", "version"} <= created.json().keys()
    pipeline_id = created.json()["id"]
    listed = (await api.get("/pipelines")).json()["data"]
    assert [p["id"] for p in listed if p["name"] == "approval"] == [pipeline_id]

    started = await api.post(f"/pipelines/{pipeline_id}/runs", json={"params": {"who": "alice"}})
    assert started.status_code == 201
    run = started.json()
    assert RUN_KEYS <= run.keys() and run["status"] in ("pending", "running", "waiting")
    assert all(STEP_KEYS <= step.keys() for step in run["steps"].values())

    stream = asyncio.create_task(api.get(f"/pipelines/runs/{run['id']}/stream"))
    waiting = await wait_for(api, run["id"], lambda r: r["steps"]["ask"]["status"] == "waiting")
    assert waiting["status"] == "waiting"
    sent = await api.post(f"/pipelines/runs/{run['id']}/events/approve", json={"data": {"by": "bob"}})
    assert sent.status_code == 200, sent.text
    again = await api.post(f"/pipelines/runs/{run['id']}/events/approve", json={"data": {"by": "eve"}})
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"

    response = await asyncio.wait_for(stream, 60)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = sse(response.text)
    assert events[0][0] == "run" and events[-1][0] == "end"
    final = events[-1][1]
    assert final["status"] == "succeeded" and final["steps"]["done"]["outputs"] == {"by": "bob", "who": "alice"}
    transitions = [(e["step_id"], e["status"]) for kind, e in events if kind == "step"]
    assert ("ask", "succeeded") in transitions and ("done", "succeeded") in transitions
    progress = [e["progress"] for kind, e in events if kind == "progress"]
    assert progress == sorted(progress) and progress[-1] == 100.0

    ended = (await api.get(f"/pipelines/runs/{run['id']}")).json()
    assert ended["status"] == "succeeded" and ended["finished_at"].endswith("Z")
    cancel = await api.post(f"/pipelines/runs/{run['id']}/cancel")
    assert cancel.status_code == 409 and "already succeeded" in cancel.json()["error"]["message"]


async def test_cancel_and_conflicting_versions(api):
    pipeline_id = (await api.post("/pipelines", json=APPROVAL)).json()["id"]
    run = (await api.post(f"/pipelines/{pipeline_id}/runs", json={})).json()
    run = await wait_for(api, run["id"], lambda r: r["status"] == "waiting")
    stale = await api.post(f"/pipelines/runs/{run['id']}/cancel", json={"version": run["version"] - 1})
    assert stale.status_code == 409 and stale.json()["error"]["param"] == "version"
    first, second = await asyncio.gather(
        api.post(f"/pipelines/runs/{run['id']}/cancel", json={"version": run["version"]}),
        api.post(f"/pipelines/runs/{run['id']}/events/approve", json={"data": {}, "version": run["version"]}),
    )
    assert sorted([first.status_code, second.status_code]) == [200, 409]


async def test_bad_input_gets_the_error_shape_naming_the_problem(api):
    response = await api.post("/pipelines", json={"name": "p", "steps": [{"id": "a", "action": "nope"}]})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == "steps.a.action"
    assert "unknown action 'nope'" in error["message"]

    pipeline_id = (await api.post("/pipelines", json=APPROVAL)).json()["id"]
    response = await api.post(f"/pipelines/{pipeline_id}/runs", json={"params": {"whom": "x"}})
    assert response.status_code == 400 and response.json()["error"]["param"] == "params.whom"
    response = await api.post(f"/pipelines/{pipeline_id}/runs", json={"parms": {}})
    assert response.status_code == 400 and response.json()["error"]["code"] == "unknown_field"
    assert (await api.get("/pipelines/runs/run_missing")).status_code == 404
    # a version past SQLite's INTEGER was a 500 (OverflowError), found by fuzzing
    for response in (await api.get(f"/pipelines/{pipeline_id}?version={2**64}"),
                     await api.post("/pipelines/runs/run_missing/cancel", json={"version": 2**64})):  # fmt: skip
        assert response.status_code == 400 and response.json()["error"]["param"] == "version"
    assert (await api.get("/pipelines/runs/run_missing/stream")).status_code == 404
    assert (await api.post("/pipelines/pl_missing/runs", json={})).status_code == 404
    response = await api.post("/pipelines/runs/run_missing/events/x", json={"data": {}})
    assert response.status_code == 404 and response.json()["error"]["type"] == "not_found_error"


async def test_the_routes_need_an_admin_key(api):
    response = await api.get("/pipelines", headers={"Authorization": ""})
    assert response.status_code == 401
    response = await api.get("/pipelines", headers={"Authorization": "Bearer sk-fnd-not-a-key"})
    assert response.status_code == 401
    actions = (await api.get("/pipelines/actions")).json()["data"]
    assert {"log", "set_output", "transform", "fail", "sleep", "wait_until", "wait_for_event", "http_request"} <= {
        a["name"] for a in actions
    }


async def test_without_an_executor_the_routes_answer_503(tmp_path):
    control_url = f"sqlite:///{tmp_path / 'foundry.db'}"
    await migrate(control_url)
    key = await bootstrap_admin(control_url, None)
    app = create_app(database_url=control_url, usage=None)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=transport, base_url="http://c", headers={"Authorization": f"Bearer {key}"}) as c:
            response = await c.get("/pipelines")
    assert response.status_code == 503 and response.json()["error"]["code"] == "pipelines_unavailable"
