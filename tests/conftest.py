"""Shared fixtures: a real PostgreSQL server for the session, and a fresh database per test.

- ``postgres_url`` (session): starts PostgreSQL 15 from ``/usr/lib/postgresql/15/bin`` on a free
  port with its data and socket in a temporary directory, and yields
  ``postgresql+psycopg://postgres@127.0.0.1:PORT/foundry``. Postgres refuses to run as root, so
  as root it runs as the ``postgres`` system user. Without the binaries the test is skipped,
  unless ``$CI`` is set: then it fails.
- ``database_url``: parametrised over ``sqlite`` (a file in ``tmp_path``) and ``postgres`` (a new
  database on that server, dropped afterwards), migrated to head with ``control.db.migrate``
  (PostgreSQL: copied from a template database migrated once per session).
- ``redis_url`` (session): starts ``redis-server`` from ``PATH`` on a free port, without
  persistence, in a temporary directory, and yields ``redis://127.0.0.1:PORT/0``. Skipped
  without the binary unless ``$CI`` is set: then it fails. Tests share the server, so each uses
  its own key prefix.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_START_TIMEOUT_S = 60
REDIS_START_TIMEOUT_S = 30


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    if not (PG_BIN / "postgres").is_file():
        reason = f"PostgreSQL 15 is not installed ({PG_BIN} has no postgres binary)"
        if os.environ.get("CI"):
            pytest.fail(reason + "; CI must run the PostgreSQL tests")
        pytest.skip(reason)
    as_root = os.geteuid() == 0
    run_as = ["runuser", "-u", "postgres", "--"] if as_root else []
    root = Path(tempfile.mkdtemp(prefix="foundry-pg-"))
    data, sockets, log = root / "data", root / "sock", root / "postgres.log"
    sockets.mkdir()
    if as_root:
        for path in (root, sockets):
            shutil.chown(path, "postgres", "postgres")
    try:
        _run([*run_as, str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
              "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"], log)  # fmt: skip
        port = _free_port()
        options = (
            f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        _run([*run_as, str(PG_BIN / "pg_ctl"), "start", "-D", str(data), "-l", str(log), "-w",
              "-t", str(PG_START_TIMEOUT_S), "-o", options], log)  # fmt: skip
        _wait_until_accepting(port, log)
        _admin_sql(port, "CREATE DATABASE foundry")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/foundry"
    finally:
        if (data / "postmaster.pid").exists():  # started, even if start-up then failed
            stop = [*run_as, str(PG_BIN / "pg_ctl"), "stop", "-D", str(data), "-w", "-t", "30"]
            if subprocess.run([*stop, "-m", "fast"], capture_output=True, timeout=60).returncode != 0:
                subprocess.run([*stop, "-m", "immediate"], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    from control.db import migrate

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'foundry.db'}"
        await migrate(url)
        yield url
        return
    server_url: str = request.getfixturevalue("postgres_url")
    port = int(server_url.rsplit(":", 1)[1].split("/", 1)[0])
    base = server_url.rsplit("/", 1)[0]
    if server_url not in _MIGRATED_TEMPLATES:  # migrate once per session, then copy per test
        _admin_sql(port, "CREATE DATABASE foundry_template")
        await migrate(f"{base}/foundry_template")
        _MIGRATED_TEMPLATES[server_url] = "foundry_template"
    name = f"test_{uuid.uuid4().hex[:12]}"
    _admin_sql(port, f"CREATE DATABASE {name} TEMPLATE {_MIGRATED_TEMPLATES[server_url]} STRATEGY FILE_COPY")
    try:
        url = f"{base}/{name}"
        await migrate(url)  # a no-op at head, as at every start of the stack
        yield url
    finally:
        _admin_sql(port, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


_MIGRATED_TEMPLATES: dict[str, str] = {}  # postgres_url -> a database migrated to head


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        reason = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("CI"):
            pytest.fail(reason + "; CI must run the Redis tests")
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="foundry-redis-"))
    log = root / "redis.log"
    port = _free_port()
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
           "--dir", str(root), "--logfile", str(log)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_until_redis_answers(port, proc, log)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


def _wait_until_redis_answers(port: int, proc: subprocess.Popen, log: Path) -> None:
    import redis

    deadline = time.monotonic() + REDIS_START_TIMEOUT_S
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2)
    try:
        while True:
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text()[-2000:] if log.exists() else ""
                raise RuntimeError(f"redis-server did not answer PING in {REDIS_START_TIMEOUT_S}s:\n{tail}")
            time.sleep(0.05)  # polling a condition, bounded by the deadline above
    finally:
        client.close()


def _run(cmd: list[str], log: Path) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=PG_START_TIMEOUT_S + 30)
    if result.returncode != 0:
        log_tail = log.read_text()[-2000:] if log.exists() else ""
        raise RuntimeError(f"{' '.join(cmd[:4])}... failed:\n{result.stdout}\n{result.stderr}\n{log_tail}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_accepting(port: int, log: Path) -> None:
    import psycopg

    deadline = time.monotonic() + PG_START_TIMEOUT_S
    while True:
        try:
            psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not accept connections in {PG_START_TIMEOUT_S}s:\n{log.read_text()[-2000:]}")
            time.sleep(0.1)  # polling a condition, bounded by the deadline above


def _admin_sql(port: int, sql: str) -> None:
    import psycopg

    with psycopg.connect(
        host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True, connect_timeout=10
    ) as conn:
        conn.execute(sql)
