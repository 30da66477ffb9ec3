"""Per-model limits and budgets of keys and projects: the control API, the CLI, the gateway's key
source, and migration 0002 over a database that already holds data; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timezone

import httpx
import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.pool import NullPool

# the CLI harness of the admin commands' own tests: uvicorn on a free port, typer in-process
from test_admin_cli import Foundry, serving

from control.app import create_app
from control.db import alembic_config, create_engine, create_sessionmaker, migrate, parse_url
from control.keys import DatabaseKeySource, bootstrap_admin
from control.models import UTCDateTime
from control.projects import list_projects
from serve.auth import Budget, ModelLimit, hash_key
from serve.metrics.records import UsageReport


class NoUsage:
    async def usage(self, *, since, until, project_id) -> UsageReport:
        raise AssertionError("not used here")


@asynccontextmanager
async def running(database_url: str, key: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(database_url=database_url, usage=NoUsage())
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=transport, base_url="http://control", headers={"Authorization": f"Bearer {key}"}
        ) as client:
            yield client


@pytest.fixture
async def api(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with running(database_url, await bootstrap_admin(database_url, None)) as client:
        yield client


def ok(response: httpx.Response, status: int = 200) -> dict:
    assert response.status_code == status, response.text
    return response.json()


# --- the API and the key source ----------------------------------------------------------------


async def test_limits_and_budgets_reach_the_gateway_view_of_a_key(api: httpx.AsyncClient, database_url: str) -> None:
    project = ok(await api.post("/projects", json={"name": "team", "budget_usd": 50, "budget_period": "day"}), 201)
    assert (project["budget_tokens"], project["budget_usd"], project["budget_period"]) == (None, 50.0, "day")
    created = ok(await api.post("/keys", json={
        "project": "team", "rpm": 100, "tpm": 10_000,
        "model_limits": {"chat-main": {"rpm": 10}, "vendor/m:v1": {"rpm": 5, "tpm": 2000}},
        "budget_tokens": 1_000_000, "budget_usd": 2.5,
    }), 201)  # fmt: skip
    assert created["model_limits"] == {"chat-main": {"rpm": 10, "tpm": None}, "vendor/m:v1": {"rpm": 5, "tpm": 2000}}
    assert (created["budget_tokens"], created["budget_usd"], created["budget_period"]) == (1_000_000, 2.5, "month")
    [listed] = ok(await api.get("/keys", params={"project": "team"}))["data"]
    assert {k: listed[k] for k in ("model_limits", "budget_tokens", "budget_usd")} == {
        k: created[k] for k in ("model_limits", "budget_tokens", "budget_usd")}  # fmt: skip

    source = DatabaseKeySource(database_url)
    try:
        info = (await source.load_active())[hash_key(created["key"])]
        assert (info.rpm, info.tpm) == (100, 10_000)
        assert info.model_limits == (ModelLimit("chat-main", 10, None), ModelLimit("vendor/m:v1", 5, 2000))
        assert info.budget == Budget(tokens=1_000_000, usd=2.5, period="month")
        assert info.project_budget == Budget(tokens=None, usd=50.0, period="day")
        assert info.limited

        before = await source.fingerprint()
        ok(await api.patch("/projects/team", json={"budget_tokens": 5000, "budget_usd": None}))
        after_project = await source.fingerprint()
        assert after_project != before  # a project's budget reloads the gateway's keys too
        info = (await source.load_active())[hash_key(created["key"])]
        assert info.project_budget == Budget(tokens=5000, usd=None, period="day")

        patched = ok(await api.patch(f"/keys/{created['id']}", json={
            "rpm": None, "model_limits": {"chat-main": {"tpm": 500}}, "budget_period": "day", "budget_usd": None,
        }))  # fmt: skip
        assert (patched["rpm"], patched["tpm"]) == (None, 10_000)
        assert (patched["budget_usd"], patched["budget_period"]) == (None, "day")
        assert patched["model_limits"] == {"chat-main": {"rpm": None, "tpm": 500}}
        assert patched["updated_at"] > created["updated_at"]
        assert await source.fingerprint() != after_project
        info = (await source.load_active())[hash_key(created["key"])]
        assert (info.rpm, info.model_limits) == (None, (ModelLimit("chat-main", None, 500),))
        assert info.budget == Budget(tokens=1_000_000, usd=None, period="day")

        cleared = ok(await api.patch(f"/keys/{created['id']}", json={
            "tpm": None, "model_limits": None, "budget_tokens": None}))  # fmt: skip
        assert cleared["model_limits"] is None
        ok(await api.patch("/projects/team", json={"budget_tokens": None}))
        info = (await source.load_active())[hash_key(created["key"])]
        assert not info.limited and info.budget is None and info.project_budget is None
    finally:
        await source.close()


async def test_an_empty_patch_changes_nothing(api: httpx.AsyncClient) -> None:
    created = ok(await api.post("/keys", json={"project": "p", "rpm": 3}), 201)
    same = ok(await api.patch(f"/keys/{created['id']}", json={}))
    assert same["updated_at"] == created["updated_at"] and same["rpm"] == 3
    project = ok(await api.patch(f"/projects/{created['project_id']}", json={}))  # by id as well as by name
    assert project["name"] == "p"


@pytest.mark.parametrize(
    ("method", "path", "body", "param"),
    [
        ("POST", "/keys", {"model_limits": {"m": {}}}, "model_limits.m"),
        ("POST", "/keys", {"model_limits": {"m": {"rpm": 0}}}, "model_limits.m.rpm"),
        ("POST", "/keys", {"model_limits": {"m": {"rps": 1}}}, "model_limits.m.rps"),
        ("POST", "/keys", {"budget_tokens": 0}, "budget_tokens"),
        ("POST", "/keys", {"budget_usd": -1}, "budget_usd"),
        ("POST", "/keys", {"budget_period": "week"}, "budget_period"),
        ("POST", "/projects", {"name": "x", "budget_usd": "lots"}, "budget_usd"),
        ("PATCH", "/keys/{key}", {"budget_period": None}, "budget_period"),
        ("PATCH", "/keys/{key}", {"project": "elsewhere"}, "project"),
        ("PATCH", "/projects/default", {"name": "renamed"}, "name"),
    ],
)
async def test_bad_limits_are_400_naming_the_field(api: httpx.AsyncClient, method, path, body, param) -> None:
    key = ok(await api.post("/keys", json={"project": "p"}), 201)["id"]
    response = await api.request(method, path.format(key=key), json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


async def test_unknown_keys_and_projects_are_404_and_users_are_403(api: httpx.AsyncClient) -> None:
    assert (await api.patch("/keys/key_nope", json={"rpm": 1})).json()["error"]["code"] == "key_not_found"
    assert (await api.patch("/projects/nope", json={"budget_usd": 1})).json()["error"]["code"] == "project_not_found"
    user = ok(await api.post("/keys", json={"project": "p"}), 201)["key"]
    forbidden = await api.patch("/projects/p", json={"budget_usd": 1}, headers={"Authorization": f"Bearer {user}"})
    assert forbidden.status_code == 403


# --- the CLI -----------------------------------------------------------------------------------


@pytest.fixture
async def foundry(database_url: str) -> AsyncIterator[Foundry]:
    admin_key = await bootstrap_admin(database_url, None)
    with serving(create_app(database_url=database_url, usage=NoUsage())) as url:
        yield Foundry(url, admin_key)


async def test_cli_round_trip_of_limits_and_budgets(foundry: Foundry) -> None:
    project = await foundry.json("projects", "create", "team", "--budget-tokens", "2000000", "--budget-period", "day")
    assert (project["budget_tokens"], project["budget_usd"], project["budget_period"]) == (2_000_000, None, "day")
    assert "2000000 tokens/day" in (await foundry("projects", "list")).stdout

    created = await foundry.json(
        "keys", "create", "--project", "team", "--rpm", "10", "--tpm", "5000",
        "--model-limit", "chat-main:5:", "--model-limit", "vendor/m:v1::900",
        "--budget-tokens", "100000", "--budget-usd", "12.5", "--budget-period", "day",
    )  # fmt: skip
    assert (created["rpm"], created["tpm"]) == (10, 5000)
    assert created["model_limits"] == {"chat-main": {"rpm": 5, "tpm": None}, "vendor/m:v1": {"rpm": None, "tpm": 900}}
    assert (created["budget_tokens"], created["budget_usd"], created["budget_period"]) == (100_000, 12.5, "day")
    assert "100000 tokens + $12.5/day" in (await foundry("keys", "list", "--project", "team")).stdout

    updated = (await foundry("keys", "update", created["id"], "--tpm", "6000", "--clear", "rpm",
                             "--clear", "model-limits", "--clear", "budget-usd")).stdout  # fmt: skip
    assert f"updated key {created['id']}" in updated and "tpm 6000; budget 100000 tokens/day" in updated
    [key] = await foundry.json("keys", "list", "--project", "team")
    assert (key["rpm"], key["tpm"], key["model_limits"], key["budget_usd"]) == (None, 6000, None, None)

    project = await foundry.json("projects", "update", "team", "--budget-usd", "99", "--clear", "budget-tokens")
    assert (project["budget_tokens"], project["budget_usd"], project["budget_period"]) == (None, 99.0, "day")
    assert "budget $99/day" in (await foundry("projects", "update", "team", "--budget-period", "day")).stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["keys", "create", "--project", "p", "--model-limit", "chat-main"], "expected MODEL:RPM:TPM"),
        (["keys", "create", "--project", "p", "--model-limit", "m::"], "give RPM, TPM or both"),
        (["keys", "create", "--project", "p", "--model-limit", "m:x:1"], "RPM must be a whole number"),
        (["keys", "create", "--project", "p", "--model-limit", "m:1:", "--model-limit", "m:2:"], "given twice"),
        (["keys", "update", "key_x"], "nothing to change"),
        (["keys", "update", "key_x", "--rpm", "3", "--clear", "rpm"], "contradict"),
        (["projects", "update", "p"], "nothing to change"),
    ],
)
async def test_cli_refuses_bad_limit_options_without_calling_the_api(args: list[str], message: str) -> None:
    result = await Foundry("http://127.0.0.1:1/api", "sk-fnd-unused")(*args, ok=False)
    assert result.exit_code == 1 and message in result.stderr and result.stderr.startswith("error: ")


async def test_cli_reports_api_validation_errors(foundry: Foundry) -> None:
    bad = await foundry("keys", "create", "--project", "p", "--budget-usd", "-3", ok=False)
    assert bad.exit_code == 1 and "budget_usd" in bad.stderr and "(HTTP 400)" in bad.stderr
    missing = await foundry("projects", "update", "nope", "--budget-usd", "3", ok=False)
    assert missing.exit_code == 1 and "(HTTP 404)" in missing.stderr


# --- migration 0002 over existing data ---------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def empty_database_url(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    server = sa.make_url(request.getfixturevalue("postgres_url"))
    admin = sa.create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    name = f"old_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
        admin.dispose()


def _alembic(url: str, step, revision: str) -> None:
    """``alembic upgrade|downgrade REVISION`` on ``url``, as control.db hands over a connection."""
    engine = sa.create_engine(parse_url(url, is_async=False), poolclass=NullPool)
    try:
        with engine.begin() as conn:
            config = alembic_config()
            config.attributes["connection"] = conn
            step(config, revision)
    finally:
        engine.dispose()


_projects = sa.table("projects", sa.column("id"), sa.column("name"), sa.column("created_at", UTCDateTime()))
_keys = sa.table(
    "api_keys",
    *(sa.column(c) for c in ("id", "project_id", "name", "prefix", "key_hash", "is_admin", "rpm", "tpm")),
    sa.column("models", sa.JSON()),
    *(sa.column(c, UTCDateTime()) for c in ("expires_at", "revoked_at", "created_at", "updated_at")),
)


async def test_upgrade_from_0001_keeps_keys_and_projects(empty_database_url: str) -> None:
    url = empty_database_url
    await asyncio.to_thread(_alembic, url, command.upgrade, "0001")
    made = datetime(2024, 6, 1, 12, 0, tzinfo=timezone.utc)
    engine = sa.create_engine(parse_url(url, is_async=False), poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(sa.insert(_projects).values(id="proj_old", name="legacy", created_at=made))
        conn.execute(sa.insert(_keys).values(
            id="key_old", project_id="proj_old", name="ci", prefix="sk-fnd-abcde", key_hash=hash_key("sk-fnd-old"),
            is_admin=False, models=["m1"], rpm=60, tpm=None, expires_at=None, revoked_at=None,
            created_at=made, updated_at=made,
        ))  # fmt: skip
    engine.dispose()

    await migrate(url)

    source = DatabaseKeySource(url)
    try:
        info = (await source.load_active())[hash_key("sk-fnd-old")]
        assert (info.key_id, info.project, info.models, info.rpm) == ("key_old", "legacy", ("m1",), 60)
        assert (info.model_limits, info.budget, info.project_budget) == ((), None, None)
        assert (await source.fingerprint()).endswith(made.isoformat())  # projects.updated_at = created_at
    finally:
        await source.close()
    async_engine = create_engine(url)
    try:
        async with create_sessionmaker(async_engine)() as session:
            [legacy] = [p for p in await list_projects(session) if p.name == "legacy"]
        assert (legacy.updated_at, legacy.budget_period, legacy.budget_tokens) == (made, "month", None)
    finally:
        await async_engine.dispose()

    await asyncio.to_thread(_alembic, url, command.downgrade, "0001")  # and back, data intact
    engine = sa.create_engine(parse_url(url, is_async=False), poolclass=NullPool)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT rpm FROM api_keys WHERE id = 'key_old'")).scalar_one() == 60
        assert "budget_tokens" not in {c["name"] for c in sa.inspect(conn).get_columns("projects")}
    engine.dispose()
