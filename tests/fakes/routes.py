"""An in-memory RouteSource (serve.gateway.routesource protocol), with counters and a gate, for gateway tests."""

from __future__ import annotations

import asyncio
from typing import Any

from serve.gateway.routesource import DynamicRoute


class MemoryRouteSource:
    """Routes by name. ``gate`` (cleared) holds every fingerprint call until set: a refresh in flight,
    which answers with the version it saw when it began."""

    def __init__(self) -> None:
        self.routes: dict[str, DynamicRoute] = {}
        self.version = 0
        self.loads = 0
        self.fingerprints = 0
        self.failing: Exception | None = None
        self.gate = asyncio.Event()
        self.gate.set()
        self.closed = False

    def put(self, name: str, table: dict[str, Any], runtime_deployments: dict[str, str] | None = None) -> None:
        self.routes[name] = DynamicRoute(table=table, runtime_deployments=runtime_deployments or {}, origin=f"test {name}")
        self.version += 1

    def remove(self, name: str) -> None:
        del self.routes[name]
        self.version += 1

    async def fingerprint(self) -> str:
        self.fingerprints += 1
        version = self.version  # the snapshot a query in flight would see
        await self.gate.wait()
        if self.failing is not None:
            raise self.failing
        return str(version)

    async def load(self) -> dict[str, DynamicRoute]:
        self.loads += 1
        return dict(self.routes)

    async def close(self) -> None:
        self.closed = True
