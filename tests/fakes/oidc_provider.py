"""A real, certified OpenID provider for tests: panva's ``oidc-provider`` on Node, whose keys can
rotate (``tests/fakes/oidc_provider_js/provider.mjs`` says what it serves).

Not a fake: discovery, JWKS and the token endpoint are the provider's own, and so are the JWT
access tokens it signs (``typ: at+jwt``, a ``kid`` in every header). Users are OAuth clients of
the client-credentials grant, so a test gets a token with one HTTP call::

    with OidcProvider.running(tmp_path, users={"alice": ["foundry-admin"]}) as provider:
        token = provider.token("alice")      # signed with key "k1"
        provider.rotate("k2", "k1")          # restart: k2 signs, k1 still published
        provider.rotate("k2")                # k1 retired

Needs ``node`` and ``npm`` on PATH; the pinned package is installed with ``npm ci`` into
``oidc_provider_js/node_modules`` on first use. Without them the test is skipped, unless
``$CI`` is set: then it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

PACKAGE = Path(__file__).with_name("oidc_provider_js")
START_TIMEOUT_S = 60.0
INSTALL_TIMEOUT_S = 300


def _need(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(reason + "; CI must run the OIDC provider tests")
    pytest.skip(reason)


def install() -> None:
    """``npm ci`` of the pinned provider, once (skips or fails the test when it cannot)."""
    if (PACKAGE / "node_modules" / "oidc-provider" / "package.json").is_file():
        return
    if shutil.which("node") is None or shutil.which("npm") is None:
        _need("node and npm are needed for the OpenID provider (tests/fakes/oidc_provider_js)")
    result = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=PACKAGE, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S,
    )  # fmt: skip
    if result.returncode != 0:
        _need(f"npm ci of the OpenID provider failed: {result.stderr[-1000:]}")


class OidcProvider:
    """One provider process at a time on a fixed port; :meth:`rotate` restarts it."""

    def __init__(self, state: Path, users: dict[str, list[str]]) -> None:
        self.state = state
        self.users = users
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen | None = None

    @classmethod
    @contextmanager
    def running(cls, state: Path, *, users: dict[str, list[str]], kids: tuple[str, ...] = ("k1",)) -> Iterator[OidcProvider]:
        install()
        provider = cls(state, users)
        provider._start(kids)
        try:
            yield provider
        finally:
            provider._stop()

    def token(self, user: str) -> str:
        """A JWT access token for ``user`` (its sub), signed with the current first key."""
        response = httpx.post(
            f"{self.url}/token", auth=(user, "secret"), timeout=30,
            data={"grant_type": "client_credentials", "resource": "https://foundry.test/api"},
        )  # fmt: skip
        response.raise_for_status()
        return response.json()["access_token"]

    def published_kids(self) -> list[str]:
        return [k["kid"] for k in httpx.get(f"{self.url}/jwks", timeout=30).json()["keys"]]

    def rotate(self, *kids: str) -> None:
        """Restart publishing ``kids`` (new ones are generated), signing with the first."""
        self._stop()
        self._start(kids)

    def _start(self, kids: tuple[str, ...]) -> None:
        args = [str(self.port), str(self.state / "keys.json"), ",".join(kids), json.dumps(self.users)]
        log = (self.state / "provider.log").open("ab")
        self._process = subprocess.Popen(["node", "provider.mjs", *args], cwd=PACKAGE, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                if httpx.get(f"{self.url}/jwks", timeout=2).json()["keys"][0]["kid"] == kids[0]:
                    return
            except (httpx.HTTPError, ValueError, KeyError, IndexError):
                pass
            if self._process.poll() is not None or time.monotonic() > deadline:
                tail = (self.state / "provider.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the OpenID provider did not start:\n{tail}")
            time.sleep(0.05)  # polling a condition, bounded by the deadline above

    def _stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=30)
        self._process = None
