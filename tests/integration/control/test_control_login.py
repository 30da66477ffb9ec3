"""``foundry login`` against a real OpenID provider (``oidc-provider-mock``), then the CLI with
that login: ``users me``, ``projects members``, ``audit verify`` (which must catch a tampered
and a deleted record), and token refresh."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import typer
from test_admin_cli import serving
from typer.testing import CliRunner

from control import login as oidc_login
from control.app import create_app
from control.cli import admin, audit, users
from control.client import Foundry as Client
from control.config import AuthConfig
from control.db import create_engine
from control.keys import bootstrap_admin

CLIENT_ID = "foundry-cli"


@pytest.fixture(scope="module")
def provider() -> Iterator[str]:
    import oidc_provider_mock  # test-only; its Authlib deprecation warnings are ignored in pyproject

    with oidc_provider_mock.run_server_in_thread() as server:
        yield f"http://localhost:{server.server_port}"


def add_user(provider: str, sub: str, **claims) -> None:
    response = httpx.put(f"{provider}/users/{sub}", json={"email": f"{sub}@example.com", "name": sub.title(), **claims})
    assert response.status_code == 204, response.text


def browser_signing_in_as(sub: str):
    """What a person does in the browser: submit the provider's form, follow the redirect."""

    def open_browser(url: str) -> None:
        answer = httpx.post(url, data={"sub": sub}, follow_redirects=False, timeout=10)
        assert answer.status_code == 302, answer.text
        httpx.get(answer.headers["location"], timeout=10)  # to the CLI's loopback server

    return open_browser


class Foundry:
    def __init__(self, api: str) -> None:
        self.app = typer.Typer()
        for module in (admin, users, audit):
            module.register(self.app)
        self.env = {"FOUNDRY_API": api, "FOUNDRY_ADMIN_KEY": None, "FOUNDRY_API_KEY": None}

    async def __call__(self, *args: str, ok: bool = True):
        result = await asyncio.to_thread(CliRunner().invoke, self.app, list(args), env=self.env)
        assert "Traceback" not in result.output
        if ok:
            assert result.exit_code == 0, result.output
        return result


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FOUNDRY_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


async def test_login_then_the_cli_acts_as_the_signed_in_user(provider: str, home: Path, database_url: str) -> None:
    add_user(provider, "ada", roles=["foundry-admin"])
    record = await asyncio.to_thread(
        oidc_login.login, provider, CLIENT_ID, client_secret="s3cret", open_browser=browser_signing_in_as("ada"),
        announce=lambda _: None,
    )
    assert record["sub"] == "ada" and record["email"] == "ada@example.com"
    cache = oidc_login.cache_path()
    assert cache.stat().st_mode & 0o077 == 0  # only the owner may read the tokens

    await bootstrap_admin(database_url, None)
    auth = AuthConfig(oidc_issuer=provider, oidc_audience=CLIENT_ID)
    with serving(create_app(database_url=database_url, usage=None, auth=auth)) as api:  # type: ignore[arg-type]
        foundry = Foundry(api)
        me = json.loads((await foundry("users", "me", "--json")).stdout)
        assert (me["sub"], me["email"], me["is_admin"]) == ("ada", "ada@example.com", True)
        # a notebook: the Python client picks up the same login
        with Client(api) as notebook:
            assert (await asyncio.to_thread(notebook.me)).email == "ada@example.com"

        await foundry("projects", "create", "lab")
        await foundry("projects", "members", "add", "lab", "bob@example.com", "--role", "viewer")
        listed = json.loads((await foundry("projects", "members", "list", "lab", "--json")).stdout)
        assert [(m["email"], m["role"]) for m in listed] == [("bob@example.com", "viewer")]
        await foundry("projects", "members", "remove", "lab", "bob@example.com")
        assert "intact: 5 records" in (await foundry("audit", "verify")).stdout  # sign-in, project, user, add, remove

        engine = create_engine(database_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(sa.text("UPDATE audit_records SET actor = 'user:nobody' WHERE seq = 2"))
            broken = await foundry("audit", "verify", ok=False)
            assert broken.exit_code == 1 and "record 2 was modified" in broken.output
            async with engine.begin() as conn:
                await conn.execute(sa.text("DELETE FROM audit_records WHERE seq = 2"))
            broken = await foundry("audit", "verify", ok=False)
            assert broken.exit_code == 1 and "record 2 is missing" in broken.output
        finally:
            await engine.dispose()

        # An expired ID token is refreshed with the refresh token. This provider answers a refresh
        # with no new ID token (Keycloak sends one), so the CLI asks for a new login.
        stale = json.loads(cache.read_text()) | {"expires_at": time.time() - 5}
        cache.write_text(json.dumps(stale))
        expired = await foundry("users", "me", ok=False)
        assert expired.exit_code == 1 and "run `foundry login`" in expired.output

    assert oidc_login.logout() and oidc_login.current_token() is None


async def test_a_refused_sign_in_is_reported(provider: str, home: Path) -> None:
    def deny(url: str) -> None:
        answer = httpx.post(url, data={"action": "deny"}, follow_redirects=False, timeout=10)
        httpx.get(answer.headers["location"], timeout=10)

    with pytest.raises(oidc_login.LoginError, match="refused"):
        await asyncio.to_thread(oidc_login.login, provider, CLIENT_ID, open_browser=deny, announce=lambda _: None)
    assert oidc_login.current_token() is None


async def test_device_flow_when_the_issuer_offers_it(home: Path) -> None:
    from tests.fakes.oidc import FakeIssuer

    shown: list[str] = []
    with FakeIssuer.running(seed=3) as issuer:
        issuer.device_subject = "dana"
        record = await asyncio.to_thread(oidc_login.login, issuer.url, "foundry", device=True, announce=shown.append)
        assert record["sub"] == "dana" and oidc_login.current_token() == record["id_token"]
    assert "ABCD-EFGH" in shown[0] and "/activate" in shown[0]


async def test_device_flow_needs_an_issuer_that_offers_it(provider: str, home: Path) -> None:
    with pytest.raises(oidc_login.LoginError, match="offers no device flow"):
        await asyncio.to_thread(oidc_login.login, provider, CLIENT_ID, device=True, announce=lambda _: None)
