"""The control API over a real database (SQLite and PostgreSQL), driven over HTTP in-process."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone

import httpx
import pytest
from fastapi import FastAPI

from control.app import create_app
from control.keys import bootstrap_admin
from serve.auth import hash_key
from serve.metrics.records import ModelUsage, UsageReport

REPORT = UsageReport(
    requests=3,
    errors=1,
    prompt_tokens=30,
    completion_tokens=12,
    cost_usd=0.25,
    models=[ModelUsage("m", 3, 1, 30, 12, 0.25, 10.0, 20.0, 5.0, 8.0)],
)


@dataclass
class RecordingUsage:
    """A UsageSource that answers with a fixed report, or fails, and remembers its calls."""

    report: UsageReport = field(default_factory=lambda: REPORT)
    error: Exception | None = None
    calls: list[dict] = field(default_factory=list)

    async def usage(self, *, since, until, project_id) -> UsageReport:
        self.calls.append({"since": since, "until": until, "project_id": project_id})
        if self.error is not None:
            raise self.error
        return self.report


@asynccontextmanager
async def running(app: FastAPI, key: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=transport, base_url="http://control", headers=headers) as client:
            yield client


@pytest.fixture
async def admin_key(database_url: str) -> str:
    return await bootstrap_admin(database_url, None)


@pytest.fixture
def usage_source() -> RecordingUsage:
    return RecordingUsage()


@pytest.fixture
async def api(database_url: str, admin_key: str, usage_source: RecordingUsage) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app(database_url=database_url, usage=usage_source), admin_key) as client:
        yield client


def assert_error(response: httpx.Response, status: int, *, param: str | None = "any", code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and set(body["error"]) == {"message", "type", "param", "code"}
    error = body["error"]
    assert response.headers["x-request-id"] in error["message"]
    assert "Traceback" not in response.text
    if param != "any":
        assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    return error


# --- health and auth -----------------------------------------------------------------------


async def test_health_needs_no_key(database_url: str) -> None:
    async with running(create_app(database_url=database_url, usage=RecordingUsage())) as client:
        response = await client.get("/health")
    assert response.status_code == 200 and response.json() == {"status": "ok", "database": "ok"}


async def test_docs_are_public_and_document_400_not_422(database_url: str) -> None:
    async with running(create_app(database_url=database_url, usage=RecordingUsage())) as client:
        docs = await client.get("/docs")
        schema = (await client.get("/openapi.json")).json()
    assert docs.status_code == 200
    create_key = schema["paths"]["/keys"]["post"]["responses"]
    assert "422" not in create_key and {"201", "400", "401", "403"} <= set(create_key)
    assert "key" in schema["components"]["schemas"]["KeyCreated"]["properties"]
    assert "key" not in schema["components"]["schemas"]["KeyPublic"]["properties"]


async def test_admin_routes_refuse_missing_and_wrong_keys(api: httpx.AsyncClient) -> None:
    for method, path in (("GET", "/projects"), ("POST", "/keys"), ("GET", "/keys"), ("DELETE", "/keys/x"), ("GET", "/usage")):
        assert_error(await api.request(method, path, headers={"Authorization": ""}), 401, code="missing_api_key")
        wrong = await api.request(method, path, headers={"Authorization": "Bearer sk-fnd-not-a-real-key"})
        assert_error(wrong, 401, code="invalid_api_key")
    basic = await api.get("/keys", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert_error(basic, 401, code="missing_api_key")


async def test_non_admin_keys_are_forbidden_and_revoked_ones_refused(api: httpx.AsyncClient) -> None:
    created = (await api.post("/keys", json={"project": "p"})).json()
    as_user = {"Authorization": f"Bearer {created['key']}"}
    assert_error(await api.get("/keys", headers=as_user), 403, code="permission_denied")
    await api.delete(f"/keys/{created['id']}")
    assert_error(await api.get("/keys", headers=as_user), 401, code="revoked_api_key")


# --- projects and keys ---------------------------------------------------------------------


async def test_projects_create_list_and_conflict(api: httpx.AsyncClient) -> None:
    created = await api.post("/projects", json={"name": "team-a"})
    assert created.status_code == 201 and created.json()["name"] == "team-a"
    listed = (await api.get("/projects")).json()
    assert listed["object"] == "list"
    assert {"admin", "default", "team-a"} <= {p["name"] for p in listed["data"]}
    assert_error(await api.post("/projects", json={"name": "team-a"}), 409, param="name", code="project_exists")


async def test_key_lifecycle_shows_the_secret_once_and_never_the_hash(api: httpx.AsyncClient, admin_key: str) -> None:
    responses = []
    created = await api.post(
        "/keys", json={"project": "my-app", "name": "ci", "models": ["m1", "m2"], "rpm": 60, "tpm": 5000}
    )
    assert created.status_code == 201
    key = created.json()
    secret = key["key"]
    assert secret.startswith("sk-fnd-") and key["prefix"] == secret[:12]
    assert (key["project"], key["name"], key["models"], key["rpm"], key["tpm"]) == ("my-app", "ci", ["m1", "m2"], 60, 5000)
    assert key["revoked_at"] is None and key["is_admin"] is False

    responses.append(listed := await api.get("/keys", params={"project": "my-app"}))
    [shown] = listed.json()["data"]
    assert shown["id"] == key["id"] and shown["prefix"] == key["prefix"] and "key" not in shown

    responses.append(revoked := await api.delete(f"/keys/{key['id']}"))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    responses.append(again := await api.delete(f"/keys/{key['id']}"))
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]
    responses.append(await api.get("/keys"))
    assert_error(await api.delete("/keys/key_unknown"), 404, param="key_id", code="key_not_found")

    for response in responses:
        assert secret not in response.text and admin_key not in response.text
        assert hash_key(secret) not in response.text and hash_key(admin_key) not in response.text
        assert "hash" not in response.text
    assert hash_key(secret) not in created.text


async def test_key_expiry_options(api: httpx.AsyncClient) -> None:
    at = await api.post("/keys", json={"project": "p", "expires_at": "2100-01-01T00:00:00"})
    assert at.status_code == 201
    assert datetime.fromisoformat(at.json()["expires_at"]) == datetime(2100, 1, 1, tzinfo=timezone.utc)
    days = await api.post("/keys", json={"project": "p", "expires_in_days": 1})
    assert days.status_code == 201 and days.json()["expires_at"] is not None
    assert_error(await api.post("/keys", json={"expires_at": "2001-01-01T00:00:00Z"}), 400, param="expires_at")


async def test_unknown_project_filter_is_404(api: httpx.AsyncClient) -> None:
    assert_error(await api.get("/keys", params={"project": "nobody"}), 404, param="project", code="project_not_found")
    assert_error(await api.get("/usage", params={"project": "nobody"}), 404, param="project")


async def test_concurrent_creates_all_succeed(api: httpx.AsyncClient) -> None:
    # Read-then-write transactions from many requests at once, into projects that do not exist
    # yet: on SQLite they must queue, not fail with "database is locked".
    responses = await asyncio.gather(*(api.post("/keys", json={"project": f"burst-{i % 3}"}) for i in range(24)))
    assert [r.status_code for r in responses] == [201] * 24, [r.text for r in responses if r.status_code != 201]
    listed = (await api.get("/keys")).json()["data"]
    assert len({k["project_id"] for k in listed if k["project"].startswith("burst-")}) == 3


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"project": "p", "rpm": 0}, "rpm", "invalid_value"),
        ({"project": "p", "tpm": "lots"}, "tpm", "invalid_value"),
        ({"project": "p", "models": []}, "models", "invalid_value"),
        ({"project": "p", "models": "m1"}, "models", "invalid_value"),
        ({"project": "no spaces allowed"}, "project", "invalid_value"),
        ({"project": "p", "bogus": 1}, "bogus", "unknown_field"),
        ({"project": "p", "expires_at": "next tuesday"}, "expires_at", "invalid_value"),
        ({"project": "p", "expires_in_days": -1}, "expires_in_days", "invalid_value"),
    ],
)
async def test_bad_key_fields_are_400_naming_the_field(api: httpx.AsyncClient, body: dict, param: str, code: str) -> None:
    error = assert_error(await api.post("/keys", json=body), 400, param=param, code=code)
    assert error["type"] == "invalid_request_error" and param in error["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"name": "nul\u0000byte"}, "name"),
        ({"models": ["m\u0000"]}, "models.0"),
        ({"rpm": 2**31}, "rpm"),
        ({"tpm": 10**30}, "tpm"),
        ({"expires_at": "0001-01-01T00:00:00+01:00"}, "expires_at"),
        ({"expires_in_days": 1e308}, "expires_in_days"),
        ({"project": "p" * 65}, "project"),
    ],
)
async def test_hostile_values_are_400_not_500(api: httpx.AsyncClient, body: dict, param: str) -> None:
    assert_error(await api.post("/keys", json=body), 400, param=param)


async def test_hostile_ids_and_filters_are_400_not_500(api: httpx.AsyncClient) -> None:
    assert_error(await api.delete("/keys/bad%00id"), 400, param="key_id")
    assert_error(await api.delete("/keys/" + "k" * 500), 400, param="key_id")
    assert_error(await api.get("/keys", params={"project": "nul\x00"}), 400, param="project")
    assert_error(await api.get("/usage", params={"project": "a b"}), 400, param="project")
    assert_error(await api.get("/usage", params={"since": "9999-12-31T23:59:59-05:00"}), 400, param="since")


async def test_both_expiries_are_400_naming_both(api: httpx.AsyncClient) -> None:
    body = {"expires_at": "2100-01-01T00:00:00Z", "expires_in_days": 3}
    error = assert_error(await api.post("/keys", json=body), 400)
    assert "expires_at" in error["message"] and "expires_in_days" in error["message"]


@pytest.mark.parametrize("content", [b"{not json", b'{"project": "p",}', b""])
async def test_malformed_json_is_400(api: httpx.AsyncClient, content: bytes) -> None:
    response = await api.post("/keys", content=content, headers={"Content-Type": "application/json"})
    assert_error(response, 400)


async def test_non_object_body_and_bad_query_are_400(api: httpx.AsyncClient) -> None:
    assert_error(await api.post("/keys", json=["p"]), 400, code="invalid_value")
    assert_error(await api.post("/projects", json={}), 400, param="name", code="missing_field")
    assert_error(await api.get("/usage", params={"since": "yesterday"}), 400, param="since")
    since, until = "2025-01-02T00:00:00Z", "2025-01-01T00:00:00Z"
    assert_error(await api.get("/usage", params={"since": since, "until": until}), 400, param="until")


async def test_unknown_routes_and_methods_use_the_error_shape(api: httpx.AsyncClient) -> None:
    assert_error(await api.get("/nope"), 404, code="unknown_route")
    assert_error(await api.put("/keys"), 405, code="method_not_allowed")


async def test_client_request_id_is_echoed(api: httpx.AsyncClient) -> None:
    response = await api.get("/nope", headers={"x-request-id": "trace-abc.123"})
    assert response.headers["x-request-id"] == "trace-abc.123"
    assert "trace-abc.123" in response.json()["error"]["message"]
    odd = await api.get("/nope", headers={"x-request-id": "x" * 300})
    assert odd.headers["x-request-id"].startswith("req_")


async def test_behind_ray_serve_the_request_id_header_is_left_to_serve(database_url: str, admin_key: str) -> None:
    """Serve's ingress puts its id in the request's headers and sends it back itself; the app
    uses that id and adds no second header (a client would read "a, a"), errors and 500s alike."""
    failing = RecordingUsage(error=RuntimeError("boom"))
    app = create_app(database_url=database_url, usage=failing, echo_request_id=False)
    async with running(app, admin_key) as client:
        for path in ("/nope", "/usage"):
            response = await client.get(path, headers={"x-request-id": "serve-id-1"})
            assert response.status_code in (404, 500) and "x-request-id" not in response.headers
            assert "serve-id-1" in response.json()["error"]["message"]


# --- usage ---------------------------------------------------------------------------------


async def test_usage_passes_the_window_and_project_id(api: httpx.AsyncClient, usage_source: RecordingUsage) -> None:
    project = (await api.post("/projects", json={"name": "team-u"})).json()
    response = await api.get(
        "/usage", params={"since": "2025-01-01T00:00:00", "until": "2025-01-02T02:00:00+02:00", "project": "team-u"}
    )
    assert response.status_code == 200
    assert response.json() == REPORT.as_dict()
    assert usage_source.calls[-1] == {
        "since": datetime(2025, 1, 1, tzinfo=timezone.utc),
        "until": datetime(2025, 1, 2, tzinfo=timezone.utc),
        "project_id": project["id"],
    }
    assert (await api.get("/usage")).status_code == 200
    assert usage_source.calls[-1] == {"since": None, "until": None, "project_id": None}


async def test_a_failing_usage_source_is_a_plain_500(database_url: str, admin_key: str) -> None:
    source = RecordingUsage(error=RuntimeError("secret internals: /var/lib/chdb exploded"))
    async with running(create_app(database_url=database_url, usage=source), admin_key) as client:
        response = await client.get("/usage")
    error = assert_error(response, 500, code="internal_error")
    assert "exploded" not in response.text and error["type"] == "server_error"


# --- database down -------------------------------------------------------------------------


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "url",
    [
        pytest.param(lambda tmp: f"sqlite:///{tmp}/missing-dir/foundry.db", id="sqlite"),
        pytest.param(lambda tmp: f"postgresql://u:hunter22@127.0.0.1:{_closed_port()}/foundry", id="postgres"),
    ],
)
async def test_unreachable_database_is_503_not_500(tmp_path, url) -> None:
    threads_before = set(threading.enumerate())
    app = create_app(database_url=url(tmp_path), usage=RecordingUsage())
    async with running(app, "sk-fnd-whatever") as client:
        health = await client.get("/health")
        keys = await client.get("/keys")
    for response in (health, keys):
        assert_error(response, 503, code="database_unavailable")
        assert "hunter22" not in response.text
    # aiosqlite (0.22) stops the worker thread of a failed connection without awaiting it; let
    # those threads finish while this test's event loop can still take their last callback.
    deadline = asyncio.get_running_loop().time() + 10
    while any(t.is_alive() for t in set(threading.enumerate()) - threads_before):
        assert asyncio.get_running_loop().time() < deadline, "aiosqlite worker threads did not stop"
        await asyncio.sleep(0.01)
