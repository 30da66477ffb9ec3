"""The gateway's in-memory view of the API keys.

Authenticating a request is one SHA-256 and one dict lookup: no database query on the request
path. The cache follows the database in two ways:

- a background task compares the source's cheap fingerprint every ``refresh_s`` and reloads
  when it changed (revocations take effect within that period);
- a miss (an unknown hash) triggers one immediate refresh, so a key created a moment ago works
  on its first request. Concurrent misses share that refresh: a flood of bad keys costs the
  database at most one query at a time. A miss waits for a refresh that *started after it
  arrived*: one already under way may have read the database before the key was written.

When the database is down, the keys already loaded keep working; a miss then gets 503
(:class:`KeysUnavailable`, retryable) rather than 401, since the key may be valid and newer.
"""

from __future__ import annotations

import asyncio
import logging
import time

from serve.auth import ApiKeyInfo, KeySource, hash_key
from serve.gateway.errors import AuthenticationFailed, KeysUnavailable

log = logging.getLogger(__name__)

SOURCE_TIMEOUT_S = 10.0


class KeyCache:
    def __init__(self, source: KeySource, *, refresh_s: float = 2.0) -> None:
        self._source = source
        self._refresh_s = refresh_s
        self._keys: dict[str, ApiKeyInfo] = {}
        self._fingerprint: str | None = None
        self._inflight: asyncio.Task | None = None
        self._inflight_started = 0.0  # monotonic time the refresh in _inflight began
        self._poller: asyncio.Task | None = None

    async def start(self) -> None:
        await self._refresh(force=True)
        self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            try:
                await self._poller
            except asyncio.CancelledError:
                pass
        await self._source.close()

    async def authenticate(self, authorization: str | None) -> ApiKeyInfo:
        secret = _bearer(authorization)
        digest = hash_key(secret)
        info = self._keys.get(digest)
        if info is None:
            if not await self._shared_refresh():
                raise KeysUnavailable("The API key cannot be checked right now; please retry shortly.")
            info = self._keys.get(digest)
            if info is None:
                raise AuthenticationFailed("Incorrect API key provided.")
        if info.expires_at is not None and info.expires_at <= time.time():
            raise AuthenticationFailed("The API key has expired.", code="expired_api_key")
        return info

    async def _shared_refresh(self) -> bool:
        """Whether the cache now holds what the source held when this call began."""
        arrived = time.monotonic()
        older = self._inflight
        if older is not None and not older.done() and self._inflight_started < arrived:
            await asyncio.wait([older])  # its outcome is the next refresh's business
        if self._inflight is None or self._inflight.done() or self._inflight_started < arrived:
            self._inflight_started = time.monotonic()
            self._inflight = asyncio.get_running_loop().create_task(self._refresh(force=False))
        try:
            await asyncio.shield(self._inflight)
        except Exception as exc:  # the database is down: keep serving the keys we know
            log.warning("key refresh failed: %s", exc)
            return False
        return True

    async def _refresh(self, *, force: bool) -> None:
        fingerprint = await asyncio.wait_for(self._source.fingerprint(), SOURCE_TIMEOUT_S)
        if force or fingerprint != self._fingerprint:
            self._keys = await asyncio.wait_for(self._source.load_active(), SOURCE_TIMEOUT_S)
            self._fingerprint = fingerprint

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            await self._shared_refresh()


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise AuthenticationFailed(
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.", code="missing_api_key"
        )
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationFailed("Malformed Authorization header; expected 'Bearer <key>'.")
    return token
