"""Identity and tenancy over HTTP: OIDC tokens (hostile ones too), key rotation, users, project
roles (a role matrix generated from the permission table), isolation and the audit chain.

Tokens come from :class:`tests.fakes.oidc.FakeIssuer`, a seeded issuer over real HTTP whose keys
rotate; the real provider's flow is in ``test_control_login.py``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from control import audit
from control.app import create_app
from control.config import AuthConfig
from control.db import create_engine
from control.keys import DatabaseKeySource, bootstrap_admin
from control.permissions import AUTHENTICATED, Role, api_routes, permissions_of, route_permission
from serve.gateway.errors import AuthenticationFailed as GatewayAuthenticationFailed
from serve.gateway.keycache import KeyCache
from serve.metrics.records import Ranking, UsageReport
from tests.fakes.oidc import FakeIssuer, hs256_with, tampered, unsigned

WAIT_S = 15.0


class Usage:
    """A UsageSource answering with an empty report and storing benchmark rows; its rankings
    name the project they were asked for."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    async def top(self, metric: str, by: str, *, since, until, limit, project_id) -> Ranking:
        return Ranking(metric, by, since, until, "1h", [(str(project_id), 1.0)])

    async def usage(self, *, since, until, project_id) -> UsageReport:
        return UsageReport(requests=0, errors=0, prompt_tokens=0, completion_tokens=0, cost_usd=0.0, models=[])

    async def insert_benchmarks(self, rows: list[dict]) -> int:
        self.rows.extend(rows)
        return len(rows)

    async def benchmarks(self, *, model_path=None) -> list[dict]:
        return list(self.rows)


@dataclass
class Stack:
    api: httpx.AsyncClient
    issuer: FakeIssuer
    admin_key: str
    database_url: str
    app: FastAPI

    def token(self, sub: str, **claims: Any) -> str:
        email = claims.pop("email", f"{sub}@example.com")
        return self.issuer.sign(self.issuer.claims(sub=sub, email=email, name=sub.title(), **claims))

    def as_user(self, sub: str, **claims: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(sub, **claims)}"}

    def as_key(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def issuer():
    with FakeIssuer.running(seed=7) as issuer:
        yield issuer


@pytest.fixture
async def stack(database_url: str, issuer: FakeIssuer) -> AsyncIterator[Stack]:
    auth = AuthConfig(oidc_issuer=issuer.url, oidc_audience="foundry", jwks_refresh_s=1.0)
    admin_key = await bootstrap_admin(database_url, None)
    app = create_app(database_url=database_url, usage=Usage(), auth=auth)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with app.router.lifespan_context(app):
        headers = {"Authorization": f"Bearer {admin_key}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://control", headers=headers) as api:
            yield Stack(api, issuer, admin_key, database_url, app)


def error_code(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert response.headers["x-request-id"] in error["message"]
    return error["code"]


# --- tokens ----------------------------------------------------------------------------------


async def test_a_valid_token_signs_in_and_provisions_the_user(stack: Stack) -> None:
    me = await stack.api.get("/users/me", headers=stack.as_user("alice"))
    assert me.status_code == 200, me.text
    body = me.json()
    assert set(body) == {"id", "sub", "email", "is_admin", "projects", "permissions"}
    assert body["sub"] == "alice" and body["email"] == "alice@example.com" and body["is_admin"] is False
    assert body["projects"] == [] and body["permissions"] == []
    again = (await stack.api.get("/users/me", headers=stack.as_user("alice"))).json()
    assert again["id"] == body["id"]
    records = (await stack.api.get("/audit", params={"action": "user.sign_in"})).json()["data"]
    assert [r["target"] for r in records] == [f"user:{body['id']}"]  # only the first sign-in


def hostile_tokens(issuer: FakeIssuer) -> dict[str, tuple[str, str]]:
    good = issuer.claims(sub="mallory")
    return {
        "alg none": (unsigned(good), "unsupported_token_algorithm"),
        "HS256 keyed with the public key": (hs256_with(issuer.public_pem(), good, issuer.kid), "unsupported_token_algorithm"),
        "another issuer": (issuer.sign(issuer.claims(iss="https://evil.example.com")), "invalid_token_issuer"),
        "another audience": (issuer.sign(issuer.claims(aud="someone-else")), "invalid_token_audience"),
        "expired": (issuer.sign(issuer.claims(exp=int(time.time()) - 120)), "token_expired"),
        "not yet valid": (issuer.sign(issuer.claims(nbf=int(time.time()) + 600)), "token_not_yet_valid"),
        "tampered": (tampered(issuer.sign(good), sub="root"), "invalid_token_signature"),
        "unknown kid": (issuer.sign(good, kid="k-not-published"), "unknown_signing_key"),
        "no sub": (issuer.sign({k: v for k, v in good.items() if k != "sub"}), "invalid_token_claims"),
    }


async def test_hostile_tokens_get_401_naming_the_reason_never_the_token(stack: Stack) -> None:
    for case, (token, code) in hostile_tokens(stack.issuer).items():
        response = await stack.api.get("/users/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, (case, response.text)
        error = response.json()["error"]
        assert (error["code"], error["type"]) == (code, "invalid_request_error"), case
        assert token not in response.text and token.split(".")[1] not in response.text, case
    users = (await stack.api.get("/users")).json()["data"]
    assert "mallory" not in {u["sub"] for u in users}


async def test_rotated_keys_are_fetched_on_an_unknown_kid_at_a_bounded_rate(stack: Stack) -> None:
    assert (await stack.api.get("/users/me", headers=stack.as_user("alice"))).status_code == 200
    fetched = stack.issuer.jwks_fetches
    stack.issuer.rotate()
    # A burst of tokens with made-up kids costs the issuer at most one more JWKS read.
    burst = [stack.issuer.sign(stack.issuer.claims(), kid=f"bogus-{i}") for i in range(20)]
    answers = await asyncio.gather(*(stack.api.get("/users/me", headers={"Authorization": f"Bearer {t}"}) for t in burst))
    assert {a.status_code for a in answers} == {401}
    assert stack.issuer.jwks_fetches <= fetched + 1
    # The new key is picked up once the (1 s) refetch interval allows.
    deadline = time.monotonic() + WAIT_S
    while (response := await stack.api.get("/users/me", headers=stack.as_user("alice"))).status_code != 200:
        assert error_code(response, 401) == "unknown_signing_key"
        assert time.monotonic() < deadline, "the rotated key was never fetched"
        await asyncio.sleep(0.1)  # polling a condition, bounded by the deadline above
    assert stack.issuer.jwks_fetches <= fetched + 3


async def test_admin_comes_from_the_roles_claim_on_every_token(stack: Stack) -> None:
    admin = (await stack.api.get("/users/me", headers=stack.as_user("root", roles=["foundry-admin"]))).json()
    assert admin["is_admin"] is True and "audit:view" in admin["permissions"]
    assert (await stack.api.get("/audit", headers=stack.as_user("root", roles=["foundry-admin"]))).status_code == 200
    demoted = stack.as_user("root", roles=["user"])
    assert (await stack.api.get("/users/me", headers=demoted)).json()["is_admin"] is False
    assert error_code(await stack.api.get("/audit", headers=demoted), 403) == "permission_denied"


async def test_nested_roles_claim_as_keycloak_sends_it(database_url: str, issuer: FakeIssuer) -> None:
    auth = AuthConfig(oidc_issuer=issuer.url, oidc_audience="foundry", roles_claim="realm_access.roles")
    app = create_app(database_url=database_url, usage=Usage(), auth=auth)
    token = issuer.sign(issuer.claims(sub="kc-admin", realm_access={"roles": ["offline_access", "foundry-admin"]}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://control") as api:
            me = await api.get("/users/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.json()["is_admin"] is True


async def test_without_auth_config_tokens_are_refused_and_keys_work(database_url: str, issuer: FakeIssuer) -> None:
    admin_key = await bootstrap_admin(database_url, None)
    app = create_app(database_url=database_url, usage=Usage())
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://control") as api:
            token = issuer.sign(issuer.claims())
            response = await api.get("/users/me", headers={"Authorization": f"Bearer {token}"})
            assert error_code(response, 401) == "oidc_not_configured"
            me = await api.get("/users/me", headers={"Authorization": f"Bearer {admin_key}"})
    assert me.status_code == 200 and me.json()["is_admin"] is True


# --- users -----------------------------------------------------------------------------------


async def test_users_created_ahead_are_matched_by_email_and_deactivation_is_403(stack: Stack) -> None:
    created = await stack.api.post("/users", json={"email": "Dana@Example.com", "is_admin": False})
    assert created.status_code == 201, created.text
    user = created.json()
    assert user["sub"] is None and user["email"] == "dana@example.com"
    assert error_code(await stack.api.post("/users", json={"email": "dana@example.com"}), 409) == "user_exists"
    me = (await stack.api.get("/users/me", headers=stack.as_user("dana-sub", email="dana@example.com"))).json()
    assert me["id"] == user["id"] and me["sub"] == "dana-sub"

    await stack.api.post("/projects", json={"name": "dana-proj"})
    await stack.api.post("/projects/dana-proj/members", json={"user": "dana@example.com", "role": "member"})
    key = (await stack.api.post("/keys", json={"project": "dana-proj"}, headers=stack.as_user("dana-sub", email="dana@example.com"))).json()
    assert key["owner_id"] == user["id"]

    off = await stack.api.patch(f"/users/{user['id']}", json={"is_active": False})
    assert off.status_code == 200 and off.json()["is_active"] is False
    response = await stack.api.get("/users/me", headers=stack.as_user("dana-sub", email="dana@example.com"))
    assert error_code(response, 403) == "user_deactivated"
    assert error_code(await stack.api.get("/keys", headers=stack.as_key(key["key"])), 403) == "user_deactivated"
    assert await _gateway_key_ids(stack.database_url) == set()  # the gateway drops its keys too
    await stack.api.patch(f"/users/{user['id']}", json={"is_active": True})
    assert await _gateway_key_ids(stack.database_url) == {key["id"]}


async def _gateway_key_ids(database_url: str) -> set[str]:
    source = DatabaseKeySource(database_url)
    try:
        return {info.key_id for info in (await source.load_active()).values() if not info.is_admin}
    finally:
        await source.close()


# --- the role matrix -------------------------------------------------------------------------

ROLES = ("admin", "owner", "member", "viewer", "outsider")


@dataclass
class Team:
    stack: Stack

    def headers(self, who: str) -> dict[str, str]:
        roles = ["foundry-admin"] if who == "admin" else []
        return self.stack.as_user(who, roles=roles)


@pytest.fixture
async def team(stack: Stack) -> Team:
    api = stack.api
    for name in ("alpha", "beta"):
        assert (await api.post("/projects", json={"name": name})).status_code == 201
    for who, project in (("owner", "alpha"), ("member", "alpha"), ("viewer", "alpha"), ("outsider", "beta")):
        role = "owner" if who == "outsider" else who
        response = await api.post(f"/projects/{project}/members", json={"user": f"{who}@example.com", "role": role})
        assert response.status_code == 201, response.text
    return Team(stack)


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def _key_of(team: Team, who: str, permission_held: bool) -> str:
    """A key in alpha: the caller's own if it may create one, else the admin's."""
    headers = team.headers(who) if permission_held and who in ("owner", "member") else team.headers("admin")
    response = await team.stack.api.post("/keys", json={"project": "alpha"}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def _user_id(team: Team) -> str:
    response = await team.stack.api.post("/users", json={"email": f"{_unique('u')}@example.com"})
    return response.json()["id"]


async def _removable_member(team: Team) -> str:
    email = f"{_unique('m')}@example.com"
    await team.stack.api.post("/projects/alpha/members", json={"user": email, "role": "viewer"})
    return email


# (method, path template, body, needs alpha?) per route; `{key}` etc. are prepared per call.
Sample = tuple[str, str, dict | None, bool]
SAMPLES: dict[tuple[str, str], Callable[..., Any]] = {
    ("GET", "/users/me"): lambda t, who, held: ("GET", "/users/me", None, False),
    ("GET", "/users"): lambda t, who, held: ("GET", "/users", None, False),
    ("POST", "/users"): lambda t, who, held: ("POST", "/users", {"email": f"{_unique('n')}@example.com"}, False),
    ("PATCH", "/users/{user_id}"): "user",
    ("GET", "/projects"): lambda t, who, held: ("GET", "/projects", None, False),
    ("POST", "/projects"): lambda t, who, held: ("POST", "/projects", {"name": _unique("p")}, False),
    ("PATCH", "/projects/{name_or_id}"): lambda t, who, held: ("PATCH", "/projects/alpha", {"budget_tokens": 10**6}, True),
    ("GET", "/projects/{name_or_id}/members"): lambda t, who, held: ("GET", "/projects/alpha/members", None, True),
    ("POST", "/projects/{name_or_id}/members"): lambda t, who, held: (
        "POST", "/projects/alpha/members", {"user": f"{_unique('a')}@example.com", "role": "viewer"}, True),
    ("DELETE", "/projects/{name_or_id}/members/{user}"): "member",
    ("PATCH", "/projects/{name_or_id}/members/{user}"): "member-patch",
    ("GET", "/keys"): lambda t, who, held: ("GET", "/keys", None, False),
    ("POST", "/keys"): lambda t, who, held: ("POST", "/keys", {"project": "alpha"}, True),
    ("PATCH", "/keys/{key_id}"): "key-patch",
    ("DELETE", "/keys/{key_id}"): "key-delete",
    ("POST", "/keys/{key_id}/regenerate"): "key-regenerate",
    ("GET", "/usage"): lambda t, who, held: ("GET", "/usage?project=alpha", None, True),
    ("POST", "/benchmarks"): lambda t, who, held: ("POST", "/benchmarks", {"rows": []}, False),
    ("GET", "/benchmarks"): lambda t, who, held: ("GET", "/benchmarks", None, False),
    ("GET", "/audit"): lambda t, who, held: ("GET", "/audit", None, False),
}  # fmt: skip


async def _request(team: Team, route: tuple[str, str], who: str, held: bool) -> Sample:
    sample = SAMPLES[route]
    if sample == "user":
        return ("PATCH", f"/users/{await _user_id(team)}", {"is_active": True}, False)
    if sample == "member":
        return ("DELETE", f"/projects/alpha/members/{await _removable_member(team)}", None, True)
    if sample == "member-patch":
        return ("PATCH", f"/projects/alpha/members/{await _removable_member(team)}", {"rpm": 5}, True)
    if sample == "key-regenerate":
        return ("POST", f"/keys/{await _key_of(team, who, held)}/regenerate", None, True)
    if sample == "key-patch":
        return ("PATCH", f"/keys/{await _key_of(team, who, held)}", {"rpm": 5}, True)
    if sample == "key-delete":
        return ("DELETE", f"/keys/{await _key_of(team, who, held)}", None, True)
    return sample(team, who, held)


def _expected(permission: str, who: str, in_alpha: bool) -> int | None:
    """None: allowed; else the status the table implies for ``who``."""
    if permission == AUTHENTICATED or who == "admin":
        return None
    role = Role.OWNER if who == "outsider" else Role(who)
    held_somewhere = permission in permissions_of(role)
    if not held_somewhere:
        return 403
    if in_alpha and who == "outsider":
        return 404  # a project it is not in: no existence leak
    return None


async def test_role_matrix_follows_the_permission_table_on_every_route(team: Team) -> None:
    app_routes = {
        (method, route.path_format): route_permission(route)
        for route in api_routes(team.stack.app)
        for method in route.methods
    }
    unprotected = {r for r, p in app_routes.items() if p is None} - {("GET", "/health")}
    assert unprotected == set(), "every route must check a permission with control.permissions.authorize"
    checked = 0
    for route, permission in sorted(app_routes.items()):
        if route not in SAMPLES:
            continue  # other routes: covered below (401 without credentials)
        for who in ROLES:
            checked += 1
            held = permission == AUTHENTICATED or who == "admin" or permission in permissions_of(
                Role.OWNER if who == "outsider" else Role(who)
            )
            method, path, body, in_alpha = await _request(team, route, who, held)
            response = await team.stack.api.request(method, path, json=body, headers=team.headers(who))
            expected = _expected(permission, who, in_alpha)
            if expected is None:
                assert response.status_code < 300, (route, who, response.text)
            else:
                assert response.status_code == expected, (route, who, permission, response.text)
    assert checked == len(SAMPLES) * len(ROLES)


async def test_every_route_but_health_needs_credentials(stack: Stack) -> None:
    for route in api_routes(stack.app):
        if route.path_format == "/health":
            continue
        for method in route.methods:
            path = route.path_format.replace("{", "x").replace("}", "x")
            response = await stack.api.request(method, path, headers={"Authorization": ""})
            assert response.status_code == 401, (method, path, response.text)


# --- isolation -------------------------------------------------------------------------------


async def test_projects_are_isolated(team: Team) -> None:
    api = team.stack.api
    alpha_key = (await api.post("/keys", json={"project": "alpha"}, headers=team.headers("member"))).json()
    beta_key = (await api.post("/keys", json={"project": "beta"}, headers=team.headers("outsider"))).json()
    otto = team.headers("outsider")

    listed = (await api.get("/keys", headers=otto)).json()["data"]
    assert [k["id"] for k in listed] == [beta_key["id"]]
    assert [p["name"] for p in (await api.get("/projects", headers=otto)).json()["data"]] == ["beta"]
    for method, path, body in (
        ("PATCH", f"/keys/{alpha_key['id']}", {"rpm": 1}),
        ("DELETE", f"/keys/{alpha_key['id']}", None),
        ("GET", "/keys?project=alpha", None),
        ("GET", "/usage?project=alpha", None),
        ("GET", "/projects/alpha/members", None),
        ("PATCH", "/projects/alpha", {"budget_tokens": 1}),
    ):
        response = await api.request(method, path, json=body, headers=otto)
        assert response.status_code == 404, (method, path, response.text)
    # the same 404 as for a key that does not exist at all
    unknown = await api.patch("/keys/key_000000000000", json={"rpm": 1}, headers=otto)
    assert error_code(unknown, 404) == "key_not_found"

    # analytics: only the caller's projects; the one it is in when it names none
    assert (await api.get("/analytics/top", params={"project": "alpha"}, headers=otto)).status_code == 404
    mine = (await api.get("/analytics/top", params={"by": "project"}, headers=otto)).json()["data"]
    beta_id = (await api.get("/projects", headers=otto)).json()["data"][0]["id"]
    assert [row["group"] for row in mine] == [beta_id]

    vera = team.headers("viewer")
    assert error_code(await api.post("/keys", json={"project": "alpha"}, headers=vera), 403) == "permission_denied"
    assert (await api.get("/keys", headers=vera)).status_code == 200
    # members change only their own keys; owners any key of the project
    owners_key = (await api.post("/keys", json={"project": "alpha"}, headers=team.headers("owner"))).json()
    mike = team.headers("member")
    assert error_code(await api.delete(f"/keys/{owners_key['id']}", headers=mike), 403) == "permission_denied"
    assert (await api.patch(f"/keys/{alpha_key['id']}", json={"rpm": 9}, headers=team.headers("owner"))).status_code == 200


async def test_a_removed_members_keys_stop_working(team: Team) -> None:
    api = team.stack.api
    key = (await api.post("/keys", json={"project": "alpha"}, headers=team.headers("member"))).json()
    assert (await api.get("/users/me", headers=team.stack.as_key(key["key"]))).json()["projects"][0]["role"] == "member"
    gateway = KeyCache(DatabaseKeySource(team.stack.database_url), refresh_s=0.05)  # the gateway's own cache
    await gateway.start()
    try:
        assert (await gateway.authenticate(f"Bearer {key['key']}")).key_id == key["id"]
        removed = await api.delete("/projects/alpha/members/member@example.com", headers=team.headers("owner"))
        assert removed.status_code == 204, removed.text
        assert error_code(await api.get("/keys", headers=team.stack.as_key(key["key"])), 403) == "permission_denied"
        deadline = time.monotonic() + WAIT_S
        while True:  # the gateway drops the key at its next refresh
            try:
                await gateway.authenticate(f"Bearer {key['key']}")
            except GatewayAuthenticationFailed:
                break
            assert time.monotonic() < deadline, "the gateway still accepts a removed member's key"
            await asyncio.sleep(0.05)  # polling a condition, bounded by the deadline above
    finally:
        await gateway.close()


async def test_revoked_keys_cannot_be_changed(stack: Stack) -> None:
    key = (await stack.api.post("/keys", json={"project": "p"})).json()
    made = (await stack.api.get("/audit", params={"project": "p"})).json()["data"]
    assert [r["action"] for r in made] == ["project.create", "key.create"]  # the project made on the way too
    assert (await stack.api.delete(f"/keys/{key['id']}")).status_code == 200
    assert error_code(await stack.api.patch(f"/keys/{key['id']}", json={"rpm": 5}), 409) == "key_revoked"


async def test_405_names_the_allowed_methods(stack: Stack) -> None:
    response = await stack.api.put("/keys")
    assert response.status_code == 405
    assert set(response.headers["allow"].split(", ")) >= {"GET", "POST"}


async def test_numbers_are_not_datetimes(stack: Stack) -> None:
    response = await stack.api.get("/usage", params={"until": "0.5"})
    assert error_code(response, 400) == "invalid_value"


async def test_benchmark_rows_are_typed_as_the_schema_says(stack: Stack) -> None:
    row = {"model_path": "m", "system": "cpu", "isl": 8, "osl": 8, "batch_size": 1, "tp_size": 1, "pp_size": 1,
           "attention_dp_size": 1, "moe_tp_size": 1, "moe_ep_size": 1, "silicon_ttft_ms": 5.0, "silicon_tpot_ms": 1.0}
    for bad, param in (({k: v for k, v in row.items() if k != "isl"}, "rows.0.isl"), (row | {"osl": True}, "rows.0.osl"),
                       (row | {"silicon_ttft_ms": -1}, "rows.0.silicon_ttft_ms")):  # fmt: skip
        response = await stack.api.post("/benchmarks", json={"rows": [bad]})
        assert error_code(response, 400) in ("missing_field", "invalid_value") and response.json()["error"]["param"] == param
    assert (await stack.api.post("/benchmarks", json={"rows": [row | {"ttft_p90_ms": 7.5}]})).status_code == 201
    [stored] = (await stack.api.get("/benchmarks")).json()["data"]
    assert stored["ttft_p90_ms"] == 7.5 and stored["isl"] == 8  # other keys are kept


async def test_a_query_parameter_given_twice_is_refused(stack: Stack) -> None:
    response = await stack.api.get("/benchmarks", params=[("model_path", "a"), ("model_path", "b")])
    assert error_code(response, 400) == "invalid_value" and "given more than once" in response.json()["error"]["message"]


# --- audit -----------------------------------------------------------------------------------


async def test_changes_are_audited_in_a_chain_that_detects_tampering(team: Team) -> None:
    api = team.stack.api
    key = (await api.post("/keys", json={"project": "alpha", "name": "ci"}, headers=team.headers("owner"),
                          params=None)).json()  # fmt: skip
    await api.patch(f"/keys/{key['id']}", json={"rpm": 7}, headers={**team.headers("owner"), "x-request-id": "req-audit-1"})
    await api.delete(f"/keys/{key['id']}", headers=team.headers("owner"))
    page = (await api.get("/audit", params={"target": f"key:{key['id']}"})).json()
    actions = [(r["action"], r["changes"]) for r in page["data"]]
    assert [a for a, _ in actions] == ["key.create", "key.update", "key.revoke"]
    assert actions[1][1] == {"rpm": 7} and page["data"][1]["request_id"] == "req-audit-1"
    assert page["data"][0]["actor"].startswith("user:") and key["key"] not in str(page)
    member_changes = (await api.get("/audit", params={"action": "member.add", "project": "alpha"})).json()["data"]
    assert len(member_changes) == 3
    row = {"model_path": "m", "system": "cpu", "isl": 8, "osl": 8, "batch_size": 1, "tp_size": 1, "pp_size": 1,
           "attention_dp_size": 1, "moe_tp_size": 1, "moe_ep_size": 1, "silicon_ttft_ms": 5.0, "silicon_tpot_ms": 1.0}
    assert (await api.post("/benchmarks", json={"rows": [row]})).status_code == 201
    stored = (await api.get("/audit", params={"action": "benchmarks.record"})).json()["data"]
    assert [r["changes"] for r in stored] == [{"rows": 1}]

    records, head = await _whole_log(api)
    assert audit.verify(records, head) == []
    engine = create_engine(team.stack.database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("UPDATE audit_records SET changes = :c WHERE seq = 3"), {"c": '{"role": "owner"}'})
        records, head = await _whole_log(api)
        assert audit.verify(records, head) == ["record 3 was modified (its hash does not match its contents)"]
        async with engine.begin() as conn:
            await conn.execute(sa.text("DELETE FROM audit_records WHERE seq IN (3, :last)"), {"last": head["length"]})
        records, head = await _whole_log(api)
        problems = audit.verify(records, head)
        assert "record 3 is missing" in problems and any("newest were deleted" in p for p in problems)
    finally:
        await engine.dispose()


async def _whole_log(api: httpx.AsyncClient) -> tuple[list[dict], dict]:
    records, after = [], 0
    while True:
        page = (await api.get("/audit", params={"after": after, "limit": 5})).json()
        records += page["data"]
        if not page["has_more"]:
            return records, page["chain"]
        after = page["data"][-1]["seq"]


@pytest.mark.slow
async def test_pipeline_changes_are_audited(tmp_path) -> None:
    """Pipelines keep their state in DBOS: each successful write still gets its audit record."""
    from control.db import migrate
    from tests.integration.pipelines.harness import database_url as pipelines_url
    from tests.integration.pipelines.harness import running_engine

    control_url = f"sqlite:///{tmp_path / 'foundry.db'}"
    await migrate(control_url)
    admin_key = await bootstrap_admin(control_url, None)
    definition = {"name": "audited", "steps": [{"id": "done", "action": "set_output", "params": {"x": "1"}}]}
    async with running_engine(pipelines_url("sqlite", tmp_path, None)) as engine:
        app = create_app(database_url=control_url, usage=Usage(), pipelines=engine)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            headers = {"Authorization": f"Bearer {admin_key}"}
            async with httpx.AsyncClient(transport=transport, base_url="http://control", headers=headers) as api:
                created = await api.post("/pipelines", json=definition)
                assert created.status_code == 201, created.text
                assert (await api.post("/pipelines", json={"name": "broken"})).status_code == 400
                records = (await api.get("/audit")).json()["data"]
    assert [(r["action"], r["actor"].split(":")[0]) for r in records] == [("post /pipelines", "key")]
