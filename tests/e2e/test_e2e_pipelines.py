"""Pipelines through `foundry up` as a user runs them, and crash-resume: the whole stack is
killed with SIGKILL during a waiting step and again during a running http_request step; each
restart resumes the run, every completed step ran once, and a real HTTP receiver sees one
idempotency key per step."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from e2e_support import ADMIN_KEY, RunningStack, free_port, start_stack

from tests.fakes.http_receiver import HttpReceiver
from tests.integration.pipelines.harness import database_url as pipelines_database

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

CONFIG = """
[server]
ingress = "proxy"   # nothing here is about the gateway's hops; fewer processes to start three times
[gateway]
num_cpus = 0.1
"""
WAIT_S = 120


def session_pids(sid: int) -> list[int]:
    """Processes of the session `foundry up` leads: its own group and Ray's workers (which run in
    groups of their own)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid:  # after the command: state, ppid, pgrp, session
            pids.append(int(stat.parent.name))
    return pids


def crash(stack: RunningStack) -> None:
    """SIGKILL the stack's process group and every process of its session, as a power cut would."""
    sid = stack.proc.pid
    os.killpg(sid, signal.SIGKILL)
    for pid in session_pids(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    stack.proc.wait(30)
    deadline = time.monotonic() + 60
    while session_pids(sid):
        assert time.monotonic() < deadline, f"processes of the killed stack remain: {session_pids(sid)}"
        time.sleep(0.2)  # polling a condition, bounded by the deadline


def get_run(stack: RunningStack, run_id: str) -> dict:
    response = httpx.get(
        f"{stack.api_url}/pipelines/runs/{run_id}", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30
    )
    response.raise_for_status()
    return response.json()


def wait_run(stack: RunningStack, run_id: str, done, what: str) -> dict:
    deadline = time.monotonic() + WAIT_S
    while True:
        run = get_run(stack, run_id)
        if done(run):
            return run
        assert time.monotonic() < deadline, f"run never reached {what}: {json.dumps(run, indent=1)}\n{stack.log()}"
        time.sleep(0.2)  # polling a condition, bounded by the deadline


@pytest.fixture(scope="module")
def receiver():
    with HttpReceiver() as rx:
        yield rx


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("pipelines-e2e")
    (tmp / "foundry.toml").write_text(CONFIG)
    return tmp


def test_a_run_survives_sigkill_of_the_stack_while_waiting_and_mid_request_and_the_cli(workdir, receiver):
    definition = workdir / "crash.yaml"
    definition.write_text(f"""
name: crash-resume
steps:
  - {{id: first, action: http_request, params: {{method: POST, url: "{receiver.url}/first", json: {{step: first}}}}}}
  - {{id: approve, action: wait_for_event, params: {{name: go}}, depends_on: [first]}}
  - id: call
    action: http_request
    params: {{method: POST, url: "{receiver.url}/hold", json: {{by: "{{{{ steps.approve.outputs.by }}}}"}}, timeout_s: 600}}
    depends_on: [approve]
  - {{id: last, action: http_request, params: {{method: POST, url: "{receiver.url}/last"}}, depends_on: [call]}}
""")
    home, config = workdir / "home", workdir / "foundry.toml"
    stack = start_stack(home, free_port(), config=config)
    try:
        run = json.loads(stack.cli("pipelines", "run", str(definition), "--json").stdout)
        run_id = run["id"]
        wait_run(stack, run_id, lambda r: r["steps"]["approve"]["status"] == "waiting", "approve waiting")
    except BaseException:
        stack.stop()
        raise
    crash(stack)  # 1: during the waiting step

    stack = start_stack(home, free_port(), config=config)
    try:
        run = get_run(stack, run_id)
        assert run["steps"]["first"]["status"] == "succeeded" and run["steps"]["approve"]["status"] == "waiting"
        assert run["status"] == "waiting"
        receiver.hold("/hold")
        stack.cli("pipelines", "event", run_id, "go", "--data", '{"by": "e2e"}')
        receiver.wait_for("/hold", 1, timeout_s=WAIT_S)
        assert get_run(stack, run_id)["steps"]["call"]["status"] == "running"
    except BaseException:
        stack.stop()
        raise
    crash(stack)  # 2: while `call` has its request in flight
    receiver.release("/hold")

    stack = start_stack(home, free_port(), config=config)
    try:
        run = wait_run(stack, run_id, lambda r: r["status"] in ("succeeded", "failed", "cancelled"), "its end")
        status = json.loads(stack.cli("pipelines", "status", run_id, "--json").stdout)
        check_the_cli(stack, workdir)  # on this stack: one start fewer
    finally:
        stack.stop()
    assert run["status"] == "succeeded", run
    assert status["status"] == "succeeded" and status["version"] >= run["version"]
    assert run["steps"]["approve"]["outputs"] == {"by": "e2e"}
    # completed steps ran once; the interrupted one ran again with the same key
    assert len(receiver.received("/first")) == 1 and len(receiver.received("/last")) == 1
    assert len(receiver.received("/hold")) == 2
    for path, step in (("/first", "first"), ("/hold", "call"), ("/last", "last")):
        assert receiver.keys(path) == {f"{run_id}:{step}"}
    assert [r.body for r in receiver.received("/hold")] == [{"by": "e2e"}] * 2


@pytest.mark.postgres
def test_a_run_on_postgresql_with_a_ray_step_resumes_after_sigkill_without_rerunning_completed_steps(
    request, receiver, tmp_path
):
    """``[pipelines] database_url`` on PostgreSQL, and a ``run_on: ray`` step (a Ray task of the
    stack's executor) killed mid-request with the whole stack."""
    url = pipelines_database("postgres", tmp_path, request.getfixturevalue("postgres_url"))
    config = tmp_path / "foundry.toml"
    config.write_text(f'{CONFIG}\n[pipelines]\ndatabase_url = "{url}"\n')
    definition = tmp_path / "pg.yaml"
    definition.write_text(f"""
name: pg-crash-resume
steps:
  - {{id: first, action: http_request, params: {{method: POST, url: "{receiver.url}/pg/first"}}}}
  - id: call
    action: http_request
    run_on: ray
    params: {{method: POST, url: "{receiver.url}/pg/hold", timeout_s: 600}}
    depends_on: [first]
  - {{id: last, action: http_request, params: {{method: POST, url: "{receiver.url}/pg/last"}}, depends_on: [call]}}
""")
    home = tmp_path / "home"
    receiver.hold("/pg/hold")
    stack = start_stack(home, free_port(), config=config)
    try:
        run_id = json.loads(stack.cli("pipelines", "run", str(definition), "--json").stdout)["id"]
        receiver.wait_for("/pg/hold", 1, timeout_s=WAIT_S)
        assert get_run(stack, run_id)["steps"]["call"]["status"] == "running"
        assert not (home / "pipelines.db").exists()  # the runs are in PostgreSQL
    except BaseException:
        stack.stop()
        raise
    crash(stack)  # while `call` has its request in flight, from a Ray worker
    receiver.release("/pg/hold")

    stack = start_stack(home, free_port(), config=config)
    try:
        run = wait_run(stack, run_id, lambda r: r["status"] in ("succeeded", "failed", "cancelled"), "its end")
        status = json.loads(stack.cli("pipelines", "status", run_id, "--json").stdout)
    finally:
        stack.stop()
    assert run["status"] == "succeeded" and status["status"] == "succeeded", run
    assert len(receiver.received("/pg/first")) == 1 and len(receiver.received("/pg/last")) == 1
    assert len(receiver.received("/pg/hold")) == 2  # the interrupted step ran again, with the same key
    for path, step in (("/pg/first", "first"), ("/pg/hold", "call"), ("/pg/last", "last")):
        assert receiver.keys(path) == {f"{run_id}:{step}"}


def check_the_cli(stack: RunningStack, workdir: Path) -> None:
    """`foundry pipelines run --wait --json`, `run --json`, `cancel`, `list`, and a refused file."""
    definition = workdir / "hello.yaml"
    definition.write_text("""
name: hello
parameters: {who: {type: string, default: world}, n: {type: integer, default: 1}}
steps:
  - {id: greet, action: set_output, params: {text: "hi {{ params.who }}", twice: "{{ params.n * 2 }}"}}
  - {id: nap, action: sleep, params: {seconds: 0.5}}
  - {id: say, action: log, params: {message: "{{ steps.greet.outputs.text }}"}, depends_on: [greet, nap]}
""")
    waiting = workdir / "waiting.yaml"
    waiting.write_text("name: waiting\nsteps:\n  - {id: ask, action: wait_for_event, params: {name: go}}\n")
    done = stack.cli("pipelines", "run", str(definition), "--param", "who=e2e", "--param", "n=4", "--wait", "--json")
    final = json.loads(done.stdout)
    assert final["status"] == "succeeded" and final["progress"] == 100
    assert final["steps"]["greet"]["outputs"] == {"text": "hi e2e", "twice": 8}
    assert final["params"] == {"who": "e2e", "n": 4}

    started = json.loads(stack.cli("pipelines", "run", str(waiting), "--json").stdout)
    assert started["status"] in ("pending", "running", "waiting")
    wait_run(stack, started["id"], lambda r: r["status"] == "waiting", "waiting")
    assert "cancelled" in stack.cli("pipelines", "cancel", started["id"]).stdout
    again = stack.cli("pipelines", "cancel", started["id"], check=False)
    assert again.returncode == 1 and "already cancelled" in again.stderr and "409" in again.stderr
    listed = stack.cli("pipelines", "list").stdout
    assert "hello" in listed and "waiting" in listed
    bad = workdir / "bad.yaml"
    bad.write_text("name: bad\nsteps:\n  - {id: a, action: log, params: {mesage: hi}}\n")
    refused = stack.cli("pipelines", "run", str(bad), check=False)
    assert refused.returncode == 1 and "steps.a.params.mesage: unknown key" in refused.stderr
