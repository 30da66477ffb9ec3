"""Sign-in with tokens of a real, certified OpenID provider (panva's ``oidc-provider``, see
:mod:`tests.fakes.oidc_provider`) whose signing keys rotate: its JWT access tokens are accepted,
a rotated-in key is fetched on its unknown ``kid``, and a retired key's tokens are refused once
the JWKS is re-read. The hostile-token matrix is in ``test_control_identity.py``."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from control.app import create_app
from control.config import AuthConfig
from tests.fakes.oidc_provider import OidcProvider

WAIT_S = 15.0


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[OidcProvider]:
    with OidcProvider.running(tmp_path, users={"ada": ["foundry-admin"], "bo": []}) as provider:
        yield provider


@pytest.fixture
async def api(database_url: str, provider: OidcProvider) -> AsyncIterator[httpx.AsyncClient]:
    auth = AuthConfig(oidc_issuer=provider.url, oidc_audience="foundry", jwks_refresh_s=1.0)
    app = create_app(database_url=database_url, usage=None, auth=auth)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://control") as client:
            yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def header(token: str) -> dict:
    part = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


async def until_status(api: httpx.AsyncClient, token: str, status: int) -> httpx.Response:
    deadline = time.monotonic() + WAIT_S
    while (response := await api.get("/users/me", headers=bearer(token))).status_code != status:
        assert time.monotonic() < deadline, response.text
        await asyncio.sleep(0.1)  # polling a condition, bounded by the deadline above
    return response


async def test_the_providers_access_tokens_sign_users_in(api: httpx.AsyncClient, provider: OidcProvider) -> None:
    token = provider.token("ada")
    assert header(token)["typ"] == "at+jwt" and header(token)["kid"] == "k1"
    me = await api.get("/users/me", headers=bearer(token))
    assert me.status_code == 200, me.text
    assert (me.json()["sub"], me.json()["email"], me.json()["is_admin"]) == ("ada", "ada@example.com", True)
    bo = (await api.get("/users/me", headers=bearer(provider.token("bo")))).json()
    assert (bo["sub"], bo["is_admin"]) == ("bo", False)

    head, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged = base64.urlsafe_b64encode(json.dumps({**claims, "sub": "root"}).encode()).rstrip(b"=").decode()
    refused = await api.get("/users/me", headers=bearer(f"{head}.{forged}.{signature}"))
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_token_signature"


async def test_rotated_keys_are_fetched_and_retired_ones_refused(api: httpx.AsyncClient, provider: OidcProvider) -> None:
    old = provider.token("ada")
    assert (await api.get("/users/me", headers=bearer(old))).status_code == 200

    provider.rotate("k2", "k1")  # k2 signs from now on; k1 is still published
    new = provider.token("ada")
    assert header(new)["kid"] == "k2" and provider.published_kids() == ["k2", "k1"]
    await until_status(api, new, 200)  # fetched on the unknown kid (at most once a second)
    assert (await api.get("/users/me", headers=bearer(old))).status_code == 200

    provider.rotate("k2")  # k1 retired: its tokens stop working at the next JWKS read
    refused = await until_status(api, old, 401)
    assert refused.json()["error"]["code"] == "unknown_signing_key"
    assert (await api.get("/users/me", headers=bearer(new))).status_code == 200
