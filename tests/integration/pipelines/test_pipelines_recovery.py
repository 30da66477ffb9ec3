"""Crash-resume on real DBOS, SQLite and PostgreSQL: the process running the engine is killed
with SIGKILL during a waiting step and during a running http_request step; a new process with
the same executor id finishes the run, each completed step ran once, and the receiver sees one
idempotency key per step."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.store import RunStore
from tests.fakes.http_receiver import HttpReceiver
from tests.integration.pipelines.harness import database_url

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

WORKER = Path(__file__).with_name("recovery_worker.py")
WAIT_S = 90


class Worker:
    def __init__(self, url: str, executor_id: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), url, executor_id],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert self.read() == {"ready": True}

    def read(self) -> dict:
        line = self.proc.stdout.readline()
        assert line, f"the worker exited with {self.proc.wait(10)}"
        return json.loads(line)

    def ask(self, command: str) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read()

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self._close_pipes()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(60)
        self._close_pipes()

    def _close_pipes(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            if not pipe.closed:
                try:
                    pipe.close()
                except BrokenPipeError:  # the worker died with our last command unread
                    pass


def wait_run(url: str, run_id: str, done, what: str) -> dict:
    async def poll() -> dict:
        store = RunStore(url)
        try:
            deadline = time.monotonic() + WAIT_S
            while True:
                run = await store.run(run_id)
                if done(run):
                    return run
                assert time.monotonic() < deadline, f"run never reached {what}: {run}"
                await asyncio.sleep(0.1)  # polling a condition, bounded by the deadline
        finally:
            await store.close()

    return asyncio.run(poll())


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_sigkill_while_waiting_and_mid_request_then_resume(backend, request, tmp_path):
    postgres = request.getfixturevalue("postgres_url") if backend == "postgres" else None
    url = database_url(backend, tmp_path, postgres)
    with HttpReceiver() as rx:
        definition = {
            "name": "crash",
            "steps": [
                {"id": "first", "action": "http_request", "params": {"method": "POST", "url": rx.url + "/first"}},
                {"id": "work", "action": "busy", "params": {"seconds": 0.2}},
                {"id": "approve", "action": "wait_for_event", "params": {"name": "go"}, "depends_on": ["first"]},
                {"id": "call", "action": "http_request", "depends_on": ["approve", "work"],
                 "params": {"method": "POST", "url": rx.url + "/hold", "json": "{{ steps.approve.outputs }}"}},
                {"id": "last", "action": "http_request", "params": {"url": rx.url + "/last"}, "depends_on": ["call"]},
            ],
        }  # fmt: skip
        worker = Worker(url, "crash-test")
        run_id = worker.ask("create " + json.dumps(definition))["id"]
        wait_run(url, run_id, lambda r: r["steps"]["approve"]["status"] == "waiting"
                 and r["steps"]["work"]["status"] == "succeeded", "approve waiting")  # fmt: skip
        worker.kill()  # 1: during the waiting step

        worker = Worker(url, "crash-test")
        run = wait_run(url, run_id, lambda r: True, "anything")
        assert run["steps"]["approve"]["status"] == "waiting" and run["steps"]["work"]["status"] == "succeeded"
        rx.hold("/hold")
        worker.ask(f'event {run_id} go {{"by": "test"}}')
        rx.wait_for("/hold", 1, timeout_s=WAIT_S)
        worker.kill()  # 2: while `call` has its request in flight
        rx.release("/hold")

        worker = Worker(url, "crash-test")
        try:
            run = wait_run(url, run_id, lambda r: r["status"] in ("succeeded", "failed", "cancelled"), "its end")
        finally:
            worker.stop()
        assert run["status"] == "succeeded", run
        assert len(rx.received("/first")) == 1 and len(rx.received("/last")) == 1
        assert len(rx.received("/hold")) == 2 and [r.body for r in rx.received("/hold")] == [{"by": "test"}] * 2
        for path, step in (("/first", "first"), ("/hold", "call"), ("/last", "last")):
            assert rx.keys(path) == {f"{run_id}:{step}"}
        assert run["steps"]["work"]["attempts"] == 1
