"""Verifying OIDC tokens (JWTs) from one issuer against its published keys.

The issuer's discovery document (``<issuer>/.well-known/openid-configuration``) names its JWKS;
the key set is cached and read again when older than ``jwks_refresh_s``, or early when a token
names a ``kid`` the cache does not hold (keys rotate) -- but never more often than once per
:data:`MIN_REFETCH_S` (or ``jwks_refresh_s`` if shorter), so a flood of made-up ``kid`` s costs the issuer one request.

A token is accepted only when all of these hold, else :class:`~control.errors.AuthenticationFailed`
names the reason (never the token):

==============================================  ===========================
check                                           error ``code``
==============================================  ===========================
three base64url parts with a JSON header        ``malformed_token``
``alg`` is asymmetric and the key allows it     ``unsupported_token_algorithm``
  (so ``none`` and HS256-with-the-public-key
  fail here)
the ``kid`` is in the issuer's JWKS             ``unknown_signing_key``
the signature verifies                          ``invalid_token_signature``
``iss`` is the issuer                           ``invalid_token_issuer``
``aud`` contains the audience                   ``invalid_token_audience``
``exp`` not past, ``nbf`` not ahead             ``token_expired`` / ``token_not_yet_valid``
  (:data:`LEEWAY_S` of clock skew allowed)
``sub`` present                                 ``invalid_token_claims``
==============================================  ===========================

Example::

    verifier = OidcVerifier(config.auth, http=httpx.AsyncClient(timeout=10))
    claims = await verifier.verify(token)        # dict of the token's claims
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import jwt
from jwt.algorithms import get_default_algorithms

from control.errors import AuthenticationFailed, ControlError

LEEWAY_S = 30
MIN_REFETCH_S = 10.0
FETCH_TIMEOUT_S = 10.0

_ALGORITHMS_BY_KTY = {
    "RSA": ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    "EC": ("ES256", "ES384", "ES512"),
    "OKP": ("EdDSA",),
}
ASYMMETRIC_ALGORITHMS = frozenset(a for algs in _ALGORITHMS_BY_KTY.values() for a in algs)


class IssuerUnavailable(ControlError):
    """The issuer's discovery document or JWKS could not be read."""

    status = 503
    type = "server_error"
    code = "oidc_issuer_unavailable"


def looks_like_jwt(token: str) -> bool:
    """Whether a bearer token is a JWT rather than an API key (``sk-fnd-...``)."""
    return token.count(".") == 2 and token.startswith("ey")


class OidcVerifier:
    """Checks tokens of the issuer in ``settings`` (a :class:`control.config.AuthConfig`)."""

    def __init__(self, settings: Any, *, http: httpx.AsyncClient) -> None:
        self.settings = settings
        self._issuer = settings.oidc_issuer.rstrip("/")
        self._http = http
        self._min_refetch_s = min(MIN_REFETCH_S, settings.jwks_refresh_s)
        self._keys: dict[str | None, dict] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0  # JWKS reads so far, for operators and tests

    async def verify(self, token: str) -> dict[str, Any]:
        """The claims of ``token``; :class:`AuthenticationFailed` naming the reason otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.exceptions.DecodeError:
            raise AuthenticationFailed("the token is not a well-formed JWT", code="malformed_token") from None
        alg = header.get("alg")
        if alg not in ASYMMETRIC_ALGORITHMS:
            raise AuthenticationFailed(
                f"tokens signed with alg {str(alg)[:20]!r} are not accepted; the issuer signs with "
                "asymmetric keys",
                code="unsupported_token_algorithm",
            )
        kid = header.get("kid")
        candidates = await self._keys_for(kid)
        candidates = [k for k in candidates if alg in _allowed_algorithms(k)]
        if not candidates:
            raise AuthenticationFailed(
                f"the issuer publishes no key for alg {alg!r}", code="unsupported_token_algorithm"
            )
        error: jwt.exceptions.PyJWTError | None = None
        for jwk in candidates:
            try:
                claims = jwt.decode(
                    token,
                    key=jwt.PyJWK(jwk, algorithm=alg).key,
                    algorithms=[alg],
                    audience=self.settings.oidc_audience,
                    issuer=self._issuer,
                    leeway=LEEWAY_S,
                    options={"require": ["exp", "iss", "aud", "sub"]},
                )
                return claims
            except jwt.exceptions.InvalidSignatureError as exc:
                error = exc  # try the next key of a kid-less token
            except jwt.exceptions.PyJWTError as exc:
                raise _reason(exc) from None
        raise _reason(error) from None

    async def _keys_for(self, kid: str | None) -> list[dict]:
        now = time.monotonic()
        stale = self._fetched_at is None or now - self._fetched_at > self.settings.jwks_refresh_s
        unknown = kid is not None and kid not in self._keys
        may_refetch = self._fetched_at is None or now - self._fetched_at >= self._min_refetch_s
        if stale or (unknown and may_refetch):
            await self._refresh(since=self._fetched_at)
        if kid is None:
            return list(self._keys.values())
        if kid not in self._keys:
            raise AuthenticationFailed(
                "the token's signing key (kid) is not among the issuer's published keys",
                code="unknown_signing_key",
            )
        return [self._keys[kid]]

    async def _refresh(self, *, since: float | None) -> None:
        async with self._lock:
            if self._fetched_at != since:  # another request refreshed while this one waited
                return
            try:
                discovery = await self._get_json(f"{self._issuer}/.well-known/openid-configuration")
                if str(discovery.get("issuer", "")).rstrip("/") != self._issuer:
                    raise IssuerUnavailable("the issuer's discovery document names another issuer")
                jwks = await self._get_json(str(discovery["jwks_uri"]))
                keys = {k.get("kid"): k for k in jwks["keys"] if k.get("use", "sig") == "sig"}
            except (KeyError, TypeError) as exc:
                raise IssuerUnavailable("the issuer's discovery document or JWKS is malformed") from exc
            self._keys = keys
            self._fetched_at = time.monotonic()
            self.fetches += 1

    async def _get_json(self, url: str) -> dict:
        try:
            response = await self._http.get(url, timeout=FETCH_TIMEOUT_S)
            response.raise_for_status()
            return response.json()
        except (httpx.HTTPError, json.JSONDecodeError) as exc:
            raise IssuerUnavailable("the OIDC issuer is unavailable; try again shortly") from exc


def _allowed_algorithms(jwk: dict) -> tuple[str, ...]:
    if "alg" in jwk:
        return (jwk["alg"],) if jwk["alg"] in ASYMMETRIC_ALGORITHMS else ()
    algorithms = _ALGORITHMS_BY_KTY.get(jwk.get("kty", ""), ())
    if jwk.get("kty") == "EC":  # the curve fixes the hash
        algorithms = {"P-256": ("ES256",), "P-384": ("ES384",), "P-521": ("ES512",)}.get(jwk.get("crv", ""), ())
    return tuple(a for a in algorithms if a in get_default_algorithms())


def _reason(exc: jwt.exceptions.PyJWTError | None) -> AuthenticationFailed:
    errors = jwt.exceptions
    table: list[tuple[type, str, str]] = [
        (errors.ExpiredSignatureError, "the token has expired", "token_expired"),
        (errors.ImmatureSignatureError, "the token is not valid yet (nbf/iat)", "token_not_yet_valid"),
        (errors.InvalidIssuerError, "the token was issued by another issuer", "invalid_token_issuer"),
        (errors.InvalidAudienceError, "the token is meant for another audience", "invalid_token_audience"),
        (errors.MissingRequiredClaimError, "the token lacks a required claim", "invalid_token_claims"),
        (errors.InvalidSignatureError, "the token's signature does not verify", "invalid_token_signature"),
        (errors.InvalidAlgorithmError, "the token's algorithm is not accepted", "unsupported_token_algorithm"),
        (errors.DecodeError, "the token is not a well-formed JWT", "malformed_token"),
    ]
    for kind, message, code in table:
        if isinstance(exc, kind):
            if isinstance(exc, errors.MissingRequiredClaimError):
                message = f"the token lacks the {exc.claim!r} claim"
            return AuthenticationFailed(message, code=code)
    return AuthenticationFailed("the token is not valid", code="invalid_token")
