"""A seeded OIDC issuer over real HTTP: discovery, a JWKS whose keys rotate, the device flow's
endpoints (RFC 8628, one "authorization_pending" before the grant), plus a signer.

It stands beside the real provider (``oidc-provider-mock``) in the tests: that one runs the
authorization-code flow and issues real ID tokens; this one lets a test rotate signing keys,
count JWKS reads, and sign the hostile tokens (``alg: none``, HS256 with the public key, a
wrong issuer, expired, tampered) the control API must refuse.

Example::

    with FakeIssuer.running(seed=1) as issuer:
        token = issuer.sign({"sub": "alice", "aud": "foundry"})
        issuer.rotate()                                   # a new kid signs from now on
"""

from __future__ import annotations

import base64
import json
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


class FakeIssuer:
    def __init__(self, seed: int = 0) -> None:
        self._random = random.Random(seed)
        self._keys: list[tuple[str, rsa.RSAPrivateKey]] = []
        self.jwks_fetches = 0
        self.url = ""
        # the device flow (RFC 8628): device_code -> polls left before the user "approves"
        self.device_polls: dict[str, int] = {}
        self.device_subject = "dev"
        self.rotate()

    @classmethod
    @contextmanager
    def running(cls, seed: int = 0) -> Iterator[FakeIssuer]:
        issuer = cls(seed)
        server = ThreadingHTTPServer(("127.0.0.1", 0), issuer._handler())
        issuer.url = f"http://127.0.0.1:{server.server_address[1]}"
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            yield issuer
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

    def rotate(self, *, keep_old: bool = True) -> str:
        """A new signing key (first in the JWKS); the old ones stay published unless not kept."""
        kid = f"k{self._random.getrandbits(32):08x}"
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._keys = [(kid, key), *(self._keys if keep_old else [])]
        return kid

    @property
    def kid(self) -> str:
        return self._keys[0][0]

    def public_pem(self) -> bytes:
        return self._keys[0][1].public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def claims(self, **overrides) -> dict:
        now = int(time.time())
        return {"iss": self.url, "aud": "foundry", "sub": "alice", "iat": now, "exp": now + 300} | overrides

    def sign(self, claims: dict, *, kid: str | None = "current", alg: str = "RS256") -> str:
        """``claims`` signed with the current key, under ``kid`` (None: no kid header)."""
        headers = {} if kid is None else {"kid": self.kid if kid == "current" else kid}
        return jwt.encode(claims, self._keys[0][1], algorithm=alg, headers=headers)

    def jwks(self) -> dict:
        keys = []
        for kid, key in self._keys:
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
            keys.append(jwk | {"kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": keys}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": issuer.url, "jwks_uri": f"{issuer.url}/jwks",
                            "token_endpoint": f"{issuer.url}/token",
                            "device_authorization_endpoint": f"{issuer.url}/device",
                            "id_token_signing_alg_values_supported": ["RS256"]}  # fmt: skip
                elif self.path == "/jwks":
                    issuer.jwks_fetches += 1
                    body = issuer.jwks()
                else:
                    self.send_error(404)
                    return
                self._json(200, body)

            def do_POST(self) -> None:  # noqa: N802
                form = parse_qs(self.rfile.read(int(self.headers.get("content-length", 0))).decode())
                form = {k: v[0] for k, v in form.items()}
                if self.path == "/device":
                    code = f"dc-{len(issuer.device_polls)}"
                    issuer.device_polls[code] = 1  # one "authorization_pending" first
                    self._json(200, {"device_code": code, "user_code": "ABCD-EFGH", "interval": 0,
                                     "verification_uri": f"{issuer.url}/activate", "expires_in": 60})  # fmt: skip
                elif self.path == "/token" and form.get("grant_type", "").endswith("device_code"):
                    left = issuer.device_polls.get(form.get("device_code", ""))
                    if left is None:
                        self._json(400, {"error": "invalid_grant"})
                    elif left > 0:
                        issuer.device_polls[form["device_code"]] = left - 1
                        self._json(400, {"error": "authorization_pending"})
                    else:
                        claims = issuer.claims(sub=issuer.device_subject, aud=form.get("client_id", ""))
                        self._json(200, {"id_token": issuer.sign(claims), "token_type": "Bearer", "expires_in": 300})
                else:
                    self.send_error(404)

            def _json(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        return Handler


def unsigned(claims: dict) -> str:
    """``alg: none``: a token with no signature at all."""
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."


def hs256_with(secret: bytes, claims: dict, kid: str) -> str:
    """HS256 keyed with ``secret`` (e.g. the issuer's public key): the classic confusion attack."""
    import hashlib
    import hmac

    signing_input = f"{_b64({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{_b64(claims)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def tampered(token: str, **changes) -> str:
    """``token`` with its payload changed and the original signature kept."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return f"{header}.{_b64(claims | changes)}.{signature}"


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
