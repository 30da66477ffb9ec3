"""Redis stopped and started under the gateway's Redis-backed limiter.

What a client sees, as documented in the README and ``serve.gateway.ratelimit`` (fail closed):
while Redis is down, limited keys get 503 ``limits_unavailable`` (never served unmetered) and
keys without limits are served as before; once Redis is back, the same gateway admits limited
keys again, and the windows and budgets count on from what they held before the outage
(Redis with persistence, as budgets that must survive a restart need).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from gateway_harness import GatewayServer

from serve.auth import Budget
from tests.fakes.upstreams import OpenAIUpstream

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

LIMITED = "sk-fnd-redis-fault-limited-0123456789abcdefghijklmn"
BUDGETED = "sk-fnd-redis-fault-budgeted-0123456789abcdefghijklm"
UNLIMITED = "sk-fnd-redis-fault-unlimited-0123456789abcdefghijk"
RPM = 6
RECOVERY_TIMEOUT_S = 30
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


class RedisServer:
    """A redis-server of this test's own, with an append-only file, that can be stopped (SIGTERM:
    it writes its data and exits, as `systemctl stop` does) and started again on the same port."""

    def __init__(self, root: Path) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            pytest.skip("redis-server is not installed (apt-get install redis-server)")
        self.root = root
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        cmd = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.root),
               "--logfile", str(self.root / "redis.log")]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, socket_connect_timeout=2)
        deadline = time.monotonic() + 30
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    pass
                assert self.proc.poll() is None and time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)  # polling a condition, bounded by the deadline
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self.proc = None


@pytest.fixture
def redis_server(tmp_path) -> Iterator[RedisServer]:
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def gateway(tmp_path, monkeypatch, redis_server) -> Iterator[GatewayServer]:
    upstream = OpenAIUpstream(api_key="k", seed=1).start()
    monkeypatch.setenv("K", "k")
    gw = GatewayServer(
        f"""
[limits]
redis_url = "{redis_server.url}"
[models.m.providers.p]
type = "openai"
base_url = "{upstream.url}"
api_key_env = "K"
""",
        tmp_path,
    )
    try:
        yield gw
    finally:
        gw.stop()
        upstream.stop()


def chat(http: httpx.Client, key: str) -> httpx.Response:
    return http.post("/chat/completions", json=CHAT, headers={"authorization": f"Bearer {key}"})


def test_redis_down_refuses_limited_keys_with_503_and_limits_count_on_once_it_is_back(gateway, redis_server):
    gateway.keys.add(LIMITED, rpm=RPM)
    gateway.keys.add(UNLIMITED)
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        before = [chat(http, LIMITED) for _ in range(3)]
        assert [r.status_code for r in before] == [200] * 3, before[-1].text
        assert before[-1].headers["x-ratelimit-remaining-requests"] == str(RPM - 3)

        redis_server.stop()
        down = chat(http, LIMITED)
        assert down.status_code == 503, down.text
        error = down.json()["error"]
        assert (error["type"], error["code"]) == ("server_error", "limits_unavailable")
        assert error["message"] == "Redis is unavailable for rate limits."
        assert chat(http, UNLIMITED).status_code == 200  # keys without limits never touch Redis

        redis_server.start()
        deadline = time.monotonic() + RECOVERY_TIMEOUT_S
        while (back := chat(http, LIMITED)).status_code == 503:  # a connection of the pool may be stale
            assert time.monotonic() < deadline, f"still refused {RECOVERY_TIMEOUT_S}s after Redis came back"
            time.sleep(0.1)  # polling a condition, bounded by the deadline
        assert back.status_code == 200, back.text
        # exact again: the 3 requests admitted before the outage still count, the refused ones do not
        assert back.headers["x-ratelimit-remaining-requests"] == str(RPM - 4)
        rest = [chat(http, LIMITED) for _ in range(3)]
    assert [r.status_code for r in rest] == [200, 200, 429]
    assert rest[-1].json()["error"]["code"] == "rate_limit_exceeded"


def test_a_budget_spent_before_redis_restarts_is_still_spent_after(gateway, redis_server):
    gateway.keys.add(UNLIMITED)
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        first = chat(http, UNLIMITED)
        assert first.status_code == 200, first.text
        used = first.json()["usage"]["total_tokens"]  # the fake upstream answers the same prompt alike
        # room for two requests and a half: the third is refused however its estimate is made
        gateway.keys.add(BUDGETED, budget=Budget(tokens=used * 2 + used // 2, period="day"))
        spent = [chat(http, BUDGETED) for _ in range(2)]
        assert [r.status_code for r in spent] == [200, 200], spent[-1].text

        redis_server.stop()
        assert chat(http, BUDGETED).status_code == 503
        redis_server.start()
        deadline = time.monotonic() + RECOVERY_TIMEOUT_S
        while (after := chat(http, BUDGETED)).status_code == 503:
            assert time.monotonic() < deadline, f"still refused {RECOVERY_TIMEOUT_S}s after Redis came back"
            time.sleep(0.1)  # polling a condition, bounded by the deadline
    assert after.status_code == 429, after.text  # had Redis forgotten the spend, this would be 200
    assert after.json()["error"]["code"] == "insufficient_quota"
