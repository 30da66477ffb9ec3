"""Fixtures of the serve integration tests: a ClickHouse HTTP endpoint for the metrics store."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[3]
START_TIMEOUT_S = 30


@pytest.fixture(scope="session")
def clickhouse_url(tmp_path_factory) -> Iterator[str]:
    """``http://default:@127.0.0.1:PORT``: ClickHouse's HTTP interface in front of the real engine
    (:mod:`tests.fakes.clickhouse_http`, chdb in a process of its own). Tests append a database."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.clickhouse_http", "--port", str(port),
         "--path", str(tmp_path_factory.mktemp("clickhouse"))],
        cwd=REPO,
    )  # fmt: skip
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, "the ClickHouse HTTP front did not start"
        time.sleep(0.1)
    yield f"http://default:@127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)
