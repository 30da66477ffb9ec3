"""``foundry keys|projects|usage`` against a real control API served by uvicorn on a free port."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

import pytest
import typer
import uvicorn
from typer.testing import CliRunner

from control.app import create_app
from control.cli import admin
from control.keys import bootstrap_admin
from serve.auth import hash_key
from serve.metrics.records import RequestRecord
from serve.metrics.store import ChdbStore


def under_api(app):
    """``app`` under ``/api`` as the stack mounts it (Ray Serve's route_prefix sets root_path)."""

    async def mounted(scope, receive, send):
        if scope["type"] == "http":
            scope = {**scope, "root_path": "/api"}
        await app(scope, receive, send)

    return mounted


@contextmanager
def serving(app) -> Iterator[str]:
    """Serve ``app`` under /api from a background thread; yields the API's base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(under_api(app), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "uvicorn exited during start-up"
        assert time.monotonic() < deadline, "uvicorn did not start within 30s"
        time.sleep(0.01)  # polling a condition, bounded by the deadline above
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/api"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


class Foundry:
    """``foundry`` with only the admin commands, run in-process like a shell would."""

    def __init__(self, api: str, admin_key: str | None) -> None:
        self.app = typer.Typer()
        admin.register(self.app)
        self.env = {"FOUNDRY_API": api, "FOUNDRY_ADMIN_KEY": admin_key, "FOUNDRY_API_KEY": None}

    async def __call__(self, *args: str, ok: bool = True, **env: str | None):
        runner = CliRunner()
        result = await asyncio.to_thread(runner.invoke, self.app, list(args), env={**self.env, **env})
        assert "Traceback" not in result.output
        if ok:
            assert result.exit_code == 0, result.output
        return result

    async def json(self, *args: str):
        return json.loads((await self(*args, "--json")).stdout)


@pytest.fixture
async def store(tmp_path) -> AsyncIterator[ChdbStore]:
    store = ChdbStore(str(tmp_path / "metrics"))
    yield store
    await store.close()


@pytest.fixture
async def foundry(database_url: str, store: ChdbStore) -> AsyncIterator[Foundry]:
    admin_key = await bootstrap_admin(database_url, None)
    with serving(create_app(database_url=database_url, usage=store)) as api:
        yield Foundry(api, admin_key)


async def test_keys_and_projects(foundry: Foundry) -> None:
    project = await foundry.json("projects", "create", "team-a")
    assert project["name"] == "team-a"
    assert "team-a" in [p["name"] for p in await foundry.json("projects", "list")]
    assert "team-a" in (await foundry("projects", "list")).stdout

    created = await foundry.json(
        "keys", "create", "--project", "team-a", "--name", "ci", "--models", "m1, m2", "--rpm", "60", "--tpm", "1000"
    )
    secret = created["key"]
    assert secret.startswith("sk-fnd-") and created["prefix"] == secret[:12]
    assert (created["models"], created["rpm"], created["tpm"], created["name"]) == (["m1", "m2"], 60, 1000, "ci")

    plain = (await foundry("keys", "create", "--project", "team-b")).stdout
    [shown_secret] = [word for word in plain.split() if word.startswith("sk-fnd-")]
    assert len(shown_secret) == len(secret) and "not shown again" in plain

    listed = await foundry.json("keys", "list")
    assert {k["project"] for k in listed} >= {"team-a", "team-b", "admin"}
    everything = json.dumps(listed)
    for s in (secret, shown_secret):
        assert s not in everything and hash_key(s) not in everything
    table = (await foundry("keys", "list", "--project", "team-a")).stdout
    assert created["id"] in table and created["prefix"] in table and "active" in table and secret not in table

    revoked = (await foundry("keys", "revoke", created["id"])).stdout
    assert f"revoked key {created['id']}" in revoked
    [after] = await foundry.json("keys", "list", "--project", "team-a")
    assert after["id"] == created["id"] and after["revoked_at"] is not None
    assert "revoked" in (await foundry("keys", "list", "--project", "team-a")).stdout


async def test_usage(foundry: Foundry, store: ChdbStore) -> None:
    project = await foundry.json("projects", "create", "team-u")
    jan = datetime(2025, 1, 10, tzinfo=timezone.utc)
    await store.insert([
        RequestRecord(request_id=f"r{i}", ts=jan, endpoint="chat.completions", model="foundry-tiny", status=200,
                      project_id=project["id"], prompt_tokens=4, completion_tokens=6, ttft_ms=3.0, latency_ms=12.0)
        for i in range(4)
    ])  # fmt: skip

    report = await foundry.json("usage")
    assert report == (await store.usage()).as_dict()
    assert (report["requests"], report["prompt_tokens"], report["completion_tokens"]) == (4, 16, 24)
    assert (await foundry.json("usage", "--project", "team-u", "--since", "2025-01-01T00:00:00"))["requests"] == 4
    assert (await foundry.json("usage", "--since", "2025-02-01T00:00:00"))["requests"] == 0
    table = (await foundry("usage")).stdout
    assert "foundry-tiny" in table and "4 requests" in table


async def test_api_errors_are_one_line_and_exit_1(foundry: Foundry) -> None:
    wrong = await foundry("keys", "list", ok=False, FOUNDRY_ADMIN_KEY="sk-fnd-wrong")
    assert wrong.exit_code == 1 and wrong.stdout == ""
    assert wrong.stderr.startswith("error: invalid API key") and "(HTTP 401)" in wrong.stderr
    assert wrong.stderr.count("\n") == 1

    user_key = (await foundry.json("keys", "create", "--project", "p"))["key"]
    forbidden = await foundry("projects", "list", ok=False, FOUNDRY_ADMIN_KEY=None, FOUNDRY_API_KEY=user_key)
    assert forbidden.exit_code == 1 and "(HTTP 403)" in forbidden.stderr
    override = await foundry("projects", "list", "--api-key", user_key, ok=False)
    assert "(HTTP 403)" in override.stderr  # --api-key wins over the environment

    missing = await foundry("keys", "revoke", "key_nope", ok=False)
    assert missing.exit_code == 1 and "no API key with id 'key_nope'" in missing.stderr and "(HTTP 404)" in missing.stderr
    bad = await foundry("keys", "create", "--project", "p", "--rpm", "0", ok=False)
    assert bad.exit_code == 1 and "rpm" in bad.stderr and "(HTTP 400)" in bad.stderr
    duplicate = await foundry("projects", "create", "p", ok=False)
    assert duplicate.exit_code == 1 and "(HTTP 409)" in duplicate.stderr


async def test_local_errors_need_no_server(tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/api"
    foundry = Foundry(closed, "sk-fnd-some-admin-key")

    down = await foundry("keys", "list", ok=False)
    assert down.exit_code == 1
    assert down.stderr == f"error: cannot reach the control API at {closed} — is `foundry up` running?\n"
    explicit = await foundry("usage", "--api", "http://127.0.0.1:1/api", ok=False)
    assert "cannot reach the control API at http://127.0.0.1:1/api" in explicit.stderr

    no_key = await foundry("keys", "list", ok=False, FOUNDRY_ADMIN_KEY=None)
    assert no_key.exit_code == 1 and "no API key" in no_key.stderr
    no_models = await foundry("keys", "create", "--project", "p", "--models", ",", ok=False)
    assert no_models.exit_code == 1 and "--models" in no_models.stderr
    no_project = await foundry("keys", "create", ok=False)
    assert no_project.exit_code == 2 and "--project" in no_project.output
