"""Sign-in and tenancy through `foundry up` with an `[auth]` table, as a team uses it: people
call the control API with the issuer's tokens, a member's key serves on the gateway, and stops
there once the member is removed from the project."""

from __future__ import annotations

import time

import httpx
import pytest
from e2e_support import ADMIN_KEY, free_port, start_stack

from tests.fakes.oidc import FakeIssuer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

WAIT_S = 60.0


@pytest.fixture(scope="module")
def issuer():
    with FakeIssuer.running(seed=5) as issuer:
        yield issuer


@pytest.fixture(scope="module")
def stack(tmp_path_factory, issuer):
    tmp = tmp_path_factory.mktemp("identity")
    config = tmp / "foundry.toml"
    config.write_text(
        f"""
[gateway]
num_cpus = 0.1
key_refresh_s = 0.5
[auth]
oidc_issuer = "{issuer.url}"
oidc_audience = "foundry"
"""
    )
    stack = start_stack(tmp / "home", free_port(), config=config)
    yield stack
    stack.stop()


def test_people_sign_in_and_a_removed_members_key_stops_at_the_gateway(stack, issuer) -> None:
    def as_user(sub: str) -> dict[str, str]:
        token = issuer.sign(issuer.claims(sub=sub, email=f"{sub}@example.com", exp=int(time.time()) + 600))
        return {"Authorization": f"Bearer {token}"}

    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=stack.api_url, timeout=30) as api:
        assert api.post("/projects", json={"name": "team-a"}, headers=admin).status_code == 201
        added = api.post("/projects/team-a/members", json={"user": "mia@example.com", "role": "member"}, headers=admin)
        assert added.status_code == 201, added.text
        me = api.get("/users/me", headers=as_user("mia")).json()
        assert me["projects"] == [{"id": me["projects"][0]["id"], "name": "team-a", "role": "member"}]
        key = api.post("/keys", json={"project": "team-a"}, headers=as_user("mia")).json()["key"]

        gateway = {"Authorization": f"Bearer {key}"}
        assert httpx.get(f"{stack.base_url}/models", headers=gateway, timeout=30).status_code == 200
        removed = api.delete("/projects/team-a/members/mia@example.com", headers=admin)
        assert removed.status_code == 204, removed.text
        deadline = time.monotonic() + WAIT_S
        while httpx.get(f"{stack.base_url}/models", headers=gateway, timeout=30).status_code != 401:
            assert time.monotonic() < deadline, "the gateway still accepts a removed member's key"
            time.sleep(0.2)  # polling a condition, bounded by the deadline above

        records = api.get("/audit", params={"project": "team-a"}, headers=admin).json()["data"]
        assert [r["action"] for r in records] == ["project.create", "member.add", "key.create", "member.remove"]
    assert "intact" in stack.cli("audit", "verify").stdout
