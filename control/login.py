"""``foundry login``: sign in at the OIDC issuer and keep the tokens for the CLI and notebooks.

Two flows, for a public client (no secret; the usual for a CLI) or, with ``client_secret``, a
confidential one (HTTP Basic, ``client_secret_basic``, which every issuer supports):

- authorization code with PKCE (RFC 7636) on a loopback redirect (RFC 8252): a one-shot HTTP
  server on ``127.0.0.1`` receives the code, the browser does the signing in;
- the device flow (RFC 8628) when the issuer offers it and ``device=True``: for a shell with no
  browser, print a code to enter elsewhere.

The tokens are cached in ``$FOUNDRY_HOME/credentials/oidc.json`` (mode 0600) with the issuer and
client id; :func:`current_token` returns the ID token, refreshing it with the refresh token a
little before it expires. The control API takes it as ``Authorization: Bearer``; its
``[auth] oidc_audience`` is the client id used here.

Example::

    tokens = login("https://keycloak.example.com/realms/ml", "foundry")
    token = current_token()            # later, in a notebook or the CLI; None if not logged in
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import threading
import time
import webbrowser
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
import jwt

from control.config import foundry_home

TIMEOUT_S = 15.0
LOGIN_TIMEOUT_S = 300.0
REFRESH_MARGIN_S = 60.0
SCOPES = "openid email profile offline_access"


class LoginError(Exception):
    """Signing in failed; the message says why (never a token)."""


def cache_path() -> Path:
    return foundry_home() / "credentials" / "oidc.json"


def login(
    issuer: str,
    client_id: str,
    *,
    open_browser: Callable[[str], Any] = webbrowser.open,
    device: bool = False,
    announce: Callable[[str], Any] = print,
    timeout_s: float = LOGIN_TIMEOUT_S,
    scopes: str = SCOPES,
    client_secret: str | None = None,
) -> dict[str, Any]:
    """Sign in and cache the tokens; returns the cached record (tokens included)."""
    issuer = issuer.rstrip("/")
    client = {"client_id": client_id} | ({"client_secret": client_secret} if client_secret else {})
    with httpx.Client(timeout=TIMEOUT_S) as http:
        discovery = _json(http.get(f"{issuer}/.well-known/openid-configuration"), "discovery")
        if device:
            if "device_authorization_endpoint" not in discovery:
                raise LoginError(f"{issuer} offers no device flow; log in without --device")
            tokens = _device_flow(http, discovery, client, scopes, announce, timeout_s)
        else:
            tokens = _code_flow(http, discovery, client, scopes, open_browser, announce, timeout_s)
    record = _record(issuer, client, discovery["token_endpoint"], tokens)
    _save(record)
    return record


def current_token(*, issuer: str | None = None) -> str | None:
    """The cached ID token, refreshed if it is about to expire; None without a usable login
    (none cached, or expired and the issuer would not refresh it with a new ID token)."""
    path = cache_path()
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if issuer is not None and record.get("issuer") != issuer.rstrip("/"):
        return None
    if record.get("expires_at", 0) - REFRESH_MARGIN_S > time.time():
        return record["id_token"]
    if not record.get("refresh_token"):
        return None
    try:
        with httpx.Client(timeout=TIMEOUT_S) as http:
            response = _token_request(
                http, record["token_endpoint"], record["client"],
                {"grant_type": "refresh_token", "refresh_token": record["refresh_token"]},
            )
        tokens = _json(response, "token refresh")
        tokens.setdefault("refresh_token", record["refresh_token"])
        record = _record(record["issuer"], record["client"], record["token_endpoint"], tokens)
    except (httpx.HTTPError, LoginError):  # e.g. an issuer that sends no new ID token: log in again
        return None
    _save(record)
    return record["id_token"]


def logout() -> bool:
    """Forget the cached tokens; whether there were any."""
    try:
        cache_path().unlink()
        return True
    except FileNotFoundError:
        return False


# --- flows -----------------------------------------------------------------------------------


def _code_flow(http, discovery, client, scopes, open_browser, announce, timeout_s) -> dict:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state = secrets.token_urlsafe(16)
    with _Loopback() as loopback:
        redirect_uri = loopback.url
        url = discovery["authorization_endpoint"] + "?" + urlencode({
            "response_type": "code", "client_id": client["client_id"], "redirect_uri": redirect_uri, "scope": scopes,
            "state": state, "code_challenge": challenge, "code_challenge_method": "S256",
            "nonce": secrets.token_urlsafe(16),
        })  # fmt: skip
        announce(f"Opening the browser to sign in; if it does not open, visit:\n{url}")
        open_browser(url)
        params = loopback.wait(timeout_s)
    if "error" in params:  # checked first: an error answer may come without the state
        raise LoginError(f"the issuer refused the sign-in: {params['error'][:100]}")
    if params.get("state") != state:
        raise LoginError("the sign-in answer did not match this login (state); try again")
    if "code" not in params:
        raise LoginError("the issuer sent no authorization code")
    response = _token_request(
        http, discovery["token_endpoint"], client,
        {"grant_type": "authorization_code", "code": params["code"], "redirect_uri": redirect_uri,
         "code_verifier": verifier},
    )  # fmt: skip
    return _json(response, "token exchange")


def _device_flow(http, discovery, client, scopes, announce, timeout_s) -> dict:
    start = _json(
        _token_request(http, discovery["device_authorization_endpoint"], client, {"scope": scopes}),
        "device authorization",
    )
    where = start.get("verification_uri_complete") or start["verification_uri"]
    announce(f"To sign in, visit {where} and enter the code {start['user_code']}")
    interval = float(start.get("interval", 5))
    deadline = time.monotonic() + min(timeout_s, float(start.get("expires_in", timeout_s)))
    while time.monotonic() < deadline:
        time.sleep(interval)  # the issuer sets the polling pace (RFC 8628 section 3.5)
        response = _token_request(
            http, discovery["token_endpoint"], client,
            {"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "device_code": start["device_code"]},
        )
        if response.status_code == 200:
            return _json(response, "token exchange")
        error = response.json().get("error") if response.headers.get("content-type", "").startswith("application/json") else None
        if error == "slow_down":
            interval += 5
        elif error != "authorization_pending":
            raise LoginError(f"the issuer refused the sign-in: {error or response.status_code}")
    raise LoginError("the sign-in was not completed in time")


def _token_request(http: httpx.Client, url: str, client: dict[str, str], data: dict[str, str]) -> httpx.Response:
    """POST to the issuer as the client: a public one names itself, a confidential one uses Basic."""
    if "client_secret" in client:
        return http.post(url, data=data, auth=(client["client_id"], client["client_secret"]))
    return http.post(url, data={**data, "client_id": client["client_id"]})


class _Loopback:
    """A one-shot HTTP server on 127.0.0.1 that receives the authorization response."""

    def __init__(self) -> None:
        self._params: dict[str, str] | None = None
        self._done = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                query = parse_qs(urlparse(self.path).query)
                outer._params = {k: v[0] for k, v in query.items()}
                outer._done.set()
                body = b"Signed in to Foundry; you can close this tab."
                self.send_response(200)
                self.send_header("content-type", "text/plain")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self._server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/callback"
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._done.is_set():
            self._server.handle_request()

    def __enter__(self) -> _Loopback:
        self._server.timeout = 0.2
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join(timeout=5)
        self._server.server_close()

    def wait(self, timeout_s: float) -> dict[str, str]:
        if not self._done.wait(timeout_s):
            raise LoginError(f"no sign-in within {timeout_s:g}s")
        return self._params or {}


# --- the cache -------------------------------------------------------------------------------


def _record(issuer: str, client: dict[str, str], token_endpoint: str, tokens: dict) -> dict[str, Any]:
    id_token = tokens.get("id_token")
    if not id_token:
        raise LoginError("the issuer returned no ID token (is the 'openid' scope allowed?)")
    try:
        claims = jwt.decode(id_token, options={"verify_signature": False})  # the API verifies it
    except jwt.exceptions.DecodeError as exc:
        raise LoginError("the issuer returned an ID token that is not a JWT") from exc
    return {
        "issuer": issuer,
        "client": client,
        "token_endpoint": token_endpoint,
        "id_token": id_token,
        "access_token": tokens.get("access_token"),
        "refresh_token": tokens.get("refresh_token"),
        "expires_at": claims.get("exp", time.time() + float(tokens.get("expires_in", 300))),
        "sub": claims.get("sub"),
        "email": claims.get("email"),
    }


def _save(record: dict) -> None:
    path = cache_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
    os.replace(tmp, path)


def _json(response: httpx.Response, what: str) -> dict:
    if response.status_code >= 400:
        try:
            detail = response.json().get("error_description") or response.json().get("error")
        except ValueError:
            detail = response.reason_phrase
        raise LoginError(f"{what} failed: {detail} (HTTP {response.status_code})")
    try:
        return response.json()
    except ValueError as exc:
        raise LoginError(f"{what}: the issuer answered with something that is not JSON") from exc
