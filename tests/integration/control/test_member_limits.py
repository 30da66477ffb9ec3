"""Limits of project members, shared by every key a member owns in the project, and regenerated
keys that keep their spending: the control API, the CLI, and the gateway's own key cache and
limiter over the keys it loads; on SQLite and PostgreSQL.

Users sign in with tokens of :class:`tests.fakes.oidc.FakeIssuer` (the fixtures of
``test_control_identity.py``); the gateway side is :class:`serve.gateway.keycache.KeyCache` over
:class:`control.keys.DatabaseKeySource` and :class:`serve.gateway.ratelimit.Limiter` on its
in-process store, as a gateway replica runs them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import orjson
import pytest

# the fixtures and helpers of the identity tests: an app with an OIDC issuer, a team in "alpha"
from test_admin_cli import Foundry, serving
from test_control_identity import WAIT_S, Team, error_code, issuer, stack, team  # noqa: F401

from control.keys import DatabaseKeySource
from serve.auth import ApiKeyInfo, Budget, MemberLimits
from serve.gateway.errors import AuthenticationFailed, QuotaExceeded, RateLimited
from serve.gateway.keycache import KeyCache
from serve.gateway.ratelimit import Limiter, MemoryStore

REFRESH_S = 0.05


@asynccontextmanager
async def gateway(database_url: str) -> AsyncIterator[KeyCache]:
    """The gateway's key cache over the control database, refreshed every 50 ms."""
    cache = KeyCache(DatabaseKeySource(database_url), refresh_s=REFRESH_S)
    await cache.start()
    try:
        yield cache
    finally:
        await cache.close()


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(REFRESH_S)  # polling a condition, bounded by the deadline above


async def info_of(cache: KeyCache, secret: str) -> ApiKeyInfo:
    return await cache.authenticate(f"Bearer {secret}")


async def spend(limiter: Limiter, key: ApiKeyInfo, usd: float) -> None:
    """One request on ``key`` that costs ``usd``, as the gateway admits and settles it."""
    ticket = await limiter.admit(key, "chat-main", 10, 10)
    await limiter.settle(ticket, 10, 10, usd)


def ok(response: httpx.Response, status: int = 200) -> dict:
    assert response.status_code == status, response.text
    return response.json()


# --- member limits ---------------------------------------------------------------------------


async def test_only_owners_and_admins_set_member_limits_and_they_are_shown_and_audited(team: Team) -> None:
    api = team.stack.api
    path = "/projects/alpha/members/member@example.com"
    limits = {"rpm": 30, "tpm": 5000, "budget_usd": 1.5, "budget_period": "day"}
    for who, status in (("member", 403), ("viewer", 403), ("outsider", 404)):
        assert (await api.patch(path, json=limits, headers=team.headers(who))).status_code == status, who
    member = ok(await api.patch(path, json=limits, headers=team.headers("owner")))
    assert {k: member[k] for k in (*limits, "budget_tokens", "role")} == {**limits, "budget_tokens": None, "role": "member"}
    [listed] = [m for m in ok(await api.get("/projects/alpha/members"))["data"] if m["email"] == "member@example.com"]
    assert listed == member

    cleared = ok(await api.patch(path, json={"rpm": None, "role": "viewer"}, headers=team.headers("admin")))
    assert (cleared["rpm"], cleared["tpm"], cleared["role"]) == (None, 5000, "viewer")
    assert error_code(await api.patch(path, json={"role": None}), 400) == "invalid_value"
    assert error_code(await api.patch(path, json={"rpm": 0}), 400) == "invalid_value"
    assert error_code(await api.patch("/projects/alpha/members/nobody@example.com", json={"rpm": 1}), 404) == (
        "member_not_found"
    )

    records = ok(await api.get("/audit", params={"action": "member.update", "project": "alpha"}))["data"]
    assert records[-2]["changes"]["budget_usd"] == {"from": None, "to": 1.5}
    assert records[-1]["changes"] == {"rpm": {"from": 30, "to": None}, "role": {"from": "member", "to": "viewer"}}

    # POST sets limits with the role; an existing member keeps the limits it is not sent
    added = ok(await api.post("/projects/alpha/members", json={"user": "new@example.com", "role": "member", "rpm": 7}), 201)
    assert (added["rpm"], added["tpm"]) == (7, None)
    again = ok(await api.post("/projects/alpha/members", json={"user": "new@example.com", "role": "member", "tpm": 70}))
    assert (again["rpm"], again["tpm"]) == (7, 70)


async def test_a_members_budget_bounds_all_its_keys_together(team: Team) -> None:
    api, mike = team.stack.api, team.headers("member")
    ok(await api.patch("/projects/alpha/members/member@example.com", json={"budget_usd": 1.0},
                       headers=team.headers("owner")))  # fmt: skip
    first = ok(await api.post("/keys", json={"project": "alpha", "budget_usd": 5.0}, headers=mike), 201)
    second = ok(await api.post("/keys", json={"project": "alpha"}, headers=mike), 201)
    third = ok(await api.post("/keys", json={"project": "alpha"}, headers=mike), 201)  # a third key does not help
    owners = ok(await api.post("/keys", json={"project": "alpha"}, headers=team.headers("owner")), 201)
    limiter = Limiter(MemoryStore())
    async with gateway(team.stack.database_url) as cache:
        a, b = await info_of(cache, first["key"]), await info_of(cache, second["key"])
        assert a.member is not None and a.member == b.member and a.key_id != b.key_id
        assert a.member.budget == Budget(usd=1.0) and (await info_of(cache, owners["key"])).member is None

        await spend(limiter, a, 0.6)
        await spend(limiter, b, 0.6)  # $0.60 of $1 spent: admitted, and spends $1.20
        for key in (a, b):  # a third request, on either key, is refused
            with pytest.raises(QuotaExceeded) as refused:
                await limiter.admit(key, "chat-main", 10, 10)
            error = refused.value.body()["error"]
            assert (refused.value.status, error["code"]) == (429, "insufficient_quota")
            assert "member member@example.com of project 'alpha'" in error["message"]
            assert "$1.2000 of $1" in error["message"]
        with pytest.raises(QuotaExceeded):
            await limiter.admit(await info_of(cache, third["key"]), "chat-main", 10, 10)
        await spend(limiter, await info_of(cache, owners["key"]), 0.6)  # the owner's keys are not bound by it

        # raising the member's budget reaches the gateway at its next refresh
        ok(await api.patch("/projects/alpha/members/member@example.com", json={"budget_usd": 2.0}))

        async def raised() -> bool:
            return (await info_of(cache, first["key"])).member.budget == Budget(usd=2.0)

        await eventually(raised, "the gateway never saw the raised member budget")
        await spend(limiter, await info_of(cache, first["key"]), 0.1)


async def test_the_tighter_of_key_and_member_rpm_admits(team: Team) -> None:
    api, mike = team.stack.api, team.headers("member")
    ok(await api.patch("/projects/alpha/members/member@example.com", json={"rpm": 3}))
    loose = ok(await api.post("/keys", json={"project": "alpha", "rpm": 100}, headers=mike), 201)
    tight = ok(await api.post("/keys", json={"project": "alpha", "rpm": 1}, headers=mike), 201)
    limiter = Limiter(MemoryStore())
    async with gateway(team.stack.database_url) as cache:
        t = await info_of(cache, tight["key"])
        await limiter.admit(t, "chat-main", 1, 1)
        with pytest.raises(RateLimited, match=f"API key {tight['id']}"):  # the key's own 1 per minute
            await limiter.admit(t, "chat-main", 1, 1)
        loose_info = await info_of(cache, loose["key"])
        await limiter.admit(loose_info, "chat-main", 1, 1)
        await limiter.admit(loose_info, "chat-main", 1, 1)  # the member's 3rd request this minute
        with pytest.raises(RateLimited, match="member member@example.com"):  # 100 on the key, 3 on the member
            await limiter.admit(loose_info, "chat-main", 1, 1)


async def test_members_without_limits_give_their_keys_none(team: Team) -> None:
    key = ok(await team.stack.api.post("/keys", json={"project": "alpha"}, headers=team.headers("member")), 201)
    source = DatabaseKeySource(team.stack.database_url)
    try:
        [info] = [i for i in (await source.load_active()).values() if i.key_id == key["id"]]
    finally:
        await source.close()
    assert info.member is None and not info.limited  # no store round trip for it at the gateway
    assert MemberLimits(id="p:u", label="x").limited is False


# --- regenerating a key ----------------------------------------------------------------------


async def test_a_regenerated_key_keeps_its_id_limits_and_spending(team: Team) -> None:
    api, mike = team.stack.api, team.headers("member")
    created = ok(await api.post("/keys", json={"project": "alpha", "rpm": 50, "budget_usd": 1.0}, headers=mike), 201)
    limiter = Limiter(MemoryStore())
    async with gateway(team.stack.database_url) as cache:
        await spend(limiter, await info_of(cache, created["key"]), 0.6)

        regenerated = ok(await api.post(f"/keys/{created['id']}/regenerate", headers=mike))
        secret = regenerated["key"]
        assert secret != created["key"] and regenerated["prefix"] == secret[:12]
        assert {k: regenerated[k] for k in ("id", "rpm", "budget_usd", "owner_id", "project")} == {
            k: created[k] for k in ("id", "rpm", "budget_usd", "owner_id", "project")}  # fmt: skip
        # the control API refuses the old secret at once; the gateway at its next refresh
        assert error_code(await api.get("/keys", headers=team.stack.as_key(created["key"])), 401) == "invalid_api_key"
        assert (await api.get("/keys", headers=team.stack.as_key(secret))).status_code == 200

        async def old_refused() -> bool:
            try:
                await info_of(cache, created["key"])
            except AuthenticationFailed:
                return True
            return False

        await eventually(old_refused, "the gateway still accepts the old secret")
        info = await info_of(cache, secret)
        assert (info.key_id, info.rpm, info.budget) == (created["id"], 50, Budget(usd=1.0))

        await spend(limiter, info, 0.6)  # $0.60 of $1 spent before the new secret: admitted
        with pytest.raises(QuotaExceeded, match=r"\$1\.2000 of \$1"):  # the budget did not reset
            await limiter.admit(info, "chat-main", 10, 10)

    audit = ok(await api.get("/audit", params={"action": "key.regenerate"}))["data"]
    assert [r["target"] for r in audit] == [f"key:{created['id']}"]
    assert audit[0]["changes"]["prefix"] == {"from": created["prefix"], "to": regenerated["prefix"]}
    assert secret not in str(audit) and created["key"] not in str(audit)


async def test_who_may_regenerate_a_key(team: Team) -> None:
    api = team.stack.api
    owners = ok(await api.post("/keys", json={"project": "alpha"}, headers=team.headers("owner")), 201)
    for who, status in (("member", 403), ("viewer", 403), ("outsider", 404)):  # a member's own keys only
        assert (await api.post(f"/keys/{owners['id']}/regenerate", headers=team.headers(who))).status_code == status
    assert (await api.post(f"/keys/{owners['id']}/regenerate", headers=team.headers("owner"))).status_code == 200
    ok(await api.delete(f"/keys/{owners['id']}"))
    assert error_code(await api.post(f"/keys/{owners['id']}/regenerate"), 409) == "key_revoked"
    assert error_code(await api.post("/keys/key_000000000000/regenerate"), 404) == "key_not_found"


# --- the CLI ---------------------------------------------------------------------------------


async def test_cli_sets_member_limits_and_regenerates_keys(team: Team) -> None:
    with serving(team.stack.app) as url:
        foundry = Foundry(url, team.stack.admin_key)
        added = await foundry.json("projects", "members", "add", "alpha", "cli@example.com", "--rpm", "60",
                                   "--budget-usd", "20", "--budget-period", "day")  # fmt: skip
        assert (added["role"], added["rpm"], added["budget_usd"], added["budget_period"]) == ("member", 60, 20.0, "day")
        out = (await foundry("projects", "members", "set", "alpha", "cli@example.com", "--tpm", "9000",
                             "--clear", "rpm")).stdout  # fmt: skip
        assert "cli@example.com is member of project alpha, limits: tpm 9000; budget $20/day" in out
        table = (await foundry("projects", "members", "list", "alpha")).stdout
        assert "9000" in table and "$20/day" in table
        nothing = await foundry("projects", "members", "set", "alpha", "cli@example.com", ok=False)
        assert nothing.exit_code == 1 and "nothing to change" in nothing.output

        mikes_token = team.stack.token("member", roles=[])  # a member regenerates its own key
        key = await foundry.json("keys", "create", "--project", "alpha", "--api-key", mikes_token)
        out = (await foundry("keys", "regenerate", key["id"], "--api-key", mikes_token)).stdout
        [secret] = [word for word in out.split() if word.startswith("sk-fnd-")]
        assert secret != key["key"] and f"regenerated key {key['id']}" in out and "not shown again" in out
        assert (await foundry("keys", "list", "--api-key", secret)).exit_code == 0
        refused = await foundry("keys", "list", "--api-key", key["key"], ok=False)
        assert refused.exit_code == 1 and "HTTP 401" in refused.output
