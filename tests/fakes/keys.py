"""An in-memory KeySource (serve.auth protocol), with counters, for gateway tests."""

from __future__ import annotations

import asyncio

from serve.auth import ApiKeyInfo, hash_key


class MemoryKeySource:
    def __init__(self) -> None:
        self.keys: dict[str, ApiKeyInfo] = {}
        self.version = 0
        self.loads = 0
        self.fingerprints = 0
        self.down = False  # True: every call fails, as a database that cannot be reached

    def add(self, secret: str, **kw) -> ApiKeyInfo:
        info = ApiKeyInfo(**{"key_id": "key_" + secret[-6:], "project_id": "proj_1", "project": "proj", **kw})
        self.keys[hash_key(secret)] = info
        self.version += 1
        return info

    def revoke(self, secret: str) -> None:
        del self.keys[hash_key(secret)]
        self.version += 1

    async def fingerprint(self) -> str:
        self.fingerprints += 1
        self._check()
        await asyncio.sleep(0)
        return str(self.version)

    async def load_active(self) -> dict[str, ApiKeyInfo]:
        self.loads += 1
        self._check()
        return dict(self.keys)

    async def close(self) -> None:
        pass

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("the key store is unreachable")
