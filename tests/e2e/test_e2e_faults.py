"""Faults the stack meets in production, on the stack started as a user starts it.

- A gateway replica killed (SIGKILL) while a closed-loop load runs: every request ends, with a
  response or a clean error, none hangs; Serve replaces the replica; the metrics store holds
  one row per request the gateway answered.
- The control database (a real PostgreSQL) unreachable at start: ``foundry up`` fails at once,
  naming the database, without a traceback.
- PostgreSQL stopped while the stack runs: the gateway keeps serving the keys it has cached,
  ``/api`` answers 503 ``database_unavailable``; once PostgreSQL is back, both recover.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from e2e_support import ADMIN_KEY, RunningStack, foundry_bin, free_port, start_stack

from tests.fakes.upstreams import OpenAIUpstream

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

PG_BIN = Path("/usr/lib/postgresql/15/bin")
GATEWAY_REPLICA = "ray::ServeReplica:gateway:Gateway"
CONCURRENCY = 8
REQUEST_TIMEOUT_S = 60  # a request still open after this has hung
REPLACE_TIMEOUT_S = 180
ROWS_TIMEOUT_S = 60
RECOVERY_TIMEOUT_S = 60
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


class PostgresServer:
    """A PostgreSQL 15 cluster of this module's own (the session's server is shared by other
    tests, so it is not the one to stop): initialised once, then stopped and started at will."""

    def __init__(self, root: Path) -> None:
        if not (PG_BIN / "postgres").is_file():
            if os.environ.get("CI"):
                pytest.fail(f"PostgreSQL 15 is not installed ({PG_BIN}); CI must run the PostgreSQL tests")
            pytest.skip(f"PostgreSQL 15 is not installed ({PG_BIN} has no postgres binary)")
        self.run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.root, self.data, self.log = root, root / "data", root / "postgres.log"
        (root / "sock").mkdir(parents=True)
        if self.run_as:
            for path in (root, root / "sock"):
                shutil.chown(path, "postgres", "postgres")
        self.port = free_port()
        self._pg("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C",
                 "--no-sync", "--no-instructions")  # fmt: skip

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/foundry"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root / 'sock'} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", options)

    def stop(self) -> None:
        self._pg("pg_ctl", "stop", "-D", str(self.data), "-w", "-t", "60", "-m", "fast")

    def create_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                             autocommit=True, connect_timeout=10) as conn:  # fmt: skip
            conn.execute(f"CREATE DATABASE {name}")

    def _pg(self, tool: str, *args: str) -> None:
        result = subprocess.run([*self.run_as, str(PG_BIN / tool), *args], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            tail = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{tool} {args[0]} failed:\n{result.stdout}\n{result.stderr}\n{tail}")


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    root = Path(tempfile.mkdtemp(prefix="foundry-pg-faults-"))
    server = PostgresServer(root)
    server.start()
    try:
        server.create_database("foundry")
        yield server
    finally:
        if (server.data / "postmaster.pid").exists():
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def upstream() -> Iterator[OpenAIUpstream]:
    with OpenAIUpstream(latency_s=0.01, record=False) as up:
        yield up


@pytest.fixture(scope="module")
def stack(tmp_path_factory, postgres, upstream) -> Iterator[RunningStack]:
    tmp = tmp_path_factory.mktemp("faults")
    config = tmp / "foundry.toml"
    config.write_text(
        f"""
[database]
url = "{postgres.url}"
[gateway]
replicas = 2
num_cpus = 0.1
key_refresh_s = 1.0
[models.chat.providers.up]
type = "openai"
base_url = "{upstream.url}"
api_key_env = "E2E_UPSTREAM_KEY"
"""
    )
    os.environ["E2E_UPSTREAM_KEY"] = "unused"
    stack = start_stack(tmp / "home", free_port(), config=config)
    yield stack
    stack.stop()


def gateway_replicas(stack: RunningStack) -> set[int]:
    """Pids of this stack's gateway replicas (descendants of its `foundry up`, not another stack's)."""
    pids = set()
    for proc in psutil.Process(stack.proc.pid).children(recursive=True):
        try:
            if " ".join(proc.cmdline()).startswith(GATEWAY_REPLICA):
                pids.add(proc.pid)
        except psutil.Error:
            pass
    return pids


def wait_for(what: str, condition, timeout_s: float, state=lambda: ""):
    deadline = time.monotonic() + timeout_s
    while not (result := condition()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s}s {state()}"
        time.sleep(0.5)  # polling a condition, bounded by the deadline
    return result


def usage_requests(stack: RunningStack, project: str) -> int:
    reply = httpx.get(f"{stack.api_url}/usage", params={"project": project}, headers=ADMIN, timeout=30)
    assert reply.status_code == 200, reply.text
    return reply.json()["requests"]


# --- a gateway replica killed mid-load -----------------------------------------------------------


async def closed_loop(stack: RunningStack, key: str, done: asyncio.Event) -> list[tuple[str, object]]:
    """CONCURRENCY clients, each sending its next request when the last one ended, until ``done``.
    Outcomes: ("answered", status) for a response of the gateway (it carries x-request-id),
    ("ingress", status) for one from the ingress alone, ("error", exception name) otherwise."""
    outcomes: list[tuple[str, object]] = []
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=stack.base_url, limits=limits, timeout=REQUEST_TIMEOUT_S) as client:

        async def client_loop(i: int) -> None:
            n = 0
            while not done.is_set():
                stream = (i + n) % 3 == 0
                body = {**CHAT, "stream": stream}
                n += 1
                try:
                    async with client.stream("POST", "/chat/completions", json=body, headers=headers) as reply:
                        await reply.aread()
                    kind = "answered" if "x-request-id" in reply.headers else "ingress"
                    outcomes.append((kind, reply.status_code))
                except httpx.TimeoutException as exc:
                    outcomes.append(("hung", type(exc).__name__))
                except httpx.TransportError as exc:  # the connection closed under the request
                    outcomes.append(("error", type(exc).__name__))

        await asyncio.gather(*(client_loop(i) for i in range(CONCURRENCY)))
    return outcomes


def test_a_gateway_replica_killed_mid_load_loses_no_answered_request(stack):
    key = json.loads(stack.cli("keys", "create", "--project", "replica-kill", "--json").stdout)["key"]
    before = wait_for("two gateway replicas", lambda: (p if len(p := gateway_replicas(stack)) == 2 else None), 120)
    victim = min(before)

    async def scenario() -> tuple[list, set[int]]:
        done = asyncio.Event()
        load = asyncio.create_task(closed_loop(stack, key, done))
        await asyncio.sleep(3)  # the load is running on both replicas
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + REPLACE_TIMEOUT_S
        while len(now := gateway_replicas(stack) - {victim}) < 2:
            assert time.monotonic() < deadline, f"Serve did not replace the killed replica in {REPLACE_TIMEOUT_S}s"
            await asyncio.sleep(0.5)
        await asyncio.sleep(3)  # and the load runs on the replacement too
        done.set()
        return await load, now

    outcomes, after = asyncio.run(scenario())
    kinds = Counter(kind for kind, _ in outcomes)
    assert not kinds["hung"], outcomes
    assert after - before, "no new gateway replica"
    answered = [status for kind, status in outcomes if kind == "answered"]
    assert Counter(answered)[200] >= 50, Counter(outcomes)
    # what the gateway did not answer ended at once: an ingress error or a closed connection
    assert all(status in (502, 503, 504) for kind, status in outcomes if kind == "ingress"), Counter(outcomes)
    assert all(status == 200 for status in answered), Counter(outcomes)
    # one metrics row per answered request: none lost with the killed replica (its unsent rows
    # wait in its spool; its replacement sends them), none doubled. A request the replica had
    # finished and recorded when it was killed, before its last bytes went out, is a row too,
    # and its client saw the connection close: at most one such row per cut request.
    cut = len(outcomes) - len(answered) - kinds["hung"]
    rows = wait_for("metrics rows", lambda: (n if (n := usage_requests(stack, "replica-kill")) >= len(answered) else None),
                    ROWS_TIMEOUT_S, lambda: f"{usage_requests(stack, 'replica-kill')} rows, {Counter(outcomes)}")  # fmt: skip
    assert len(answered) <= rows <= len(answered) + cut, (rows, Counter(outcomes))


# --- the control database --------------------------------------------------------------------


def test_up_with_the_database_unreachable_fails_fast_naming_it(tmp_path):
    port = free_port()  # nothing listens there
    config = tmp_path / "foundry.toml"
    config.write_text(
        f"""
[database]
url = "postgresql://foundry:hunter22@127.0.0.1:{port}/foundry"
[models.remote.providers.p]
type = "openai"
base_url = "http://127.0.0.1:9/v1"
"""
    )
    env = {**os.environ, "FOUNDRY_HOME": str(tmp_path / "home"), "FOUNDRY_ADMIN_KEY": ADMIN_KEY}
    env.pop("RAY_ADDRESS", None)
    t0 = time.monotonic()
    result = subprocess.run(
        [foundry_bin(), "up", "--port", str(free_port()), "--config", str(config)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    elapsed = time.monotonic() - t0
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert f"the control database postgresql+psycopg://foundry:***@127.0.0.1:{port}/foundry is unreachable" in output
    assert "Connection refused" in output
    assert "Traceback" not in output and "hunter22" not in output
    assert elapsed < 60, f"took {elapsed:.0f}s to fail"  # no Ray started, no retrying


def test_postgres_stopped_mid_run_gateway_serves_cached_keys_and_api_recovers(stack, postgres):
    key = json.loads(stack.cli("keys", "create", "--project", "db-down", "--json").stdout)["key"]
    auth = {"Authorization": f"Bearer {key}"}

    def chat(headers: dict) -> httpx.Response:
        return httpx.post(f"{stack.base_url}/chat/completions", json=CHAT, headers=headers, timeout=30)

    # by both replicas (each loads keys on a miss and every key_refresh_s)
    wait_for("the new key served", lambda: all(chat(auth).status_code == 200 for _ in range(6)), 30)
    postgres.stop()
    try:
        served = [chat(auth) for _ in range(6)]
        assert [r.status_code for r in served] == [200] * 6, served[-1].text
        # a key the gateway never saw may be one created a moment ago: 503, not "incorrect key"
        unknown = chat({"Authorization": "Bearer sk-fnd-never-seen-0123456789abcdefghijklmnopqrs"})
        assert unknown.status_code == 503, unknown.text
        assert unknown.json()["error"]["code"] == "keys_unavailable"
        for path in ("/health", "/keys"):
            reply = httpx.get(f"{stack.api_url}{path}", headers=ADMIN, timeout=30)
            assert reply.status_code == 503, reply.text
            error = reply.json()["error"]
            assert (error["type"], error["code"]) == ("server_error", "database_unavailable")
            assert "Traceback" not in reply.text
    finally:
        postgres.start()
    wait_for("/api/health after PostgreSQL is back",
             lambda: httpx.get(f"{stack.api_url}/health", timeout=30).status_code == 200, RECOVERY_TIMEOUT_S)  # fmt: skip
    assert httpx.get(f"{stack.api_url}/keys", headers=ADMIN, timeout=30).status_code == 200
    # and the gateway reads the database again: a key created now is served
    fresh = json.loads(stack.cli("keys", "create", "--project", "db-down", "--json").stdout)["key"]
    wait_for("a key created after the outage served",
             lambda: chat({"Authorization": f"Bearer {fresh}"}).status_code == 200, RECOVERY_TIMEOUT_S)  # fmt: skip
    assert chat(auth).status_code == 200
