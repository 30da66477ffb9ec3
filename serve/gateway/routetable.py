"""The gateway's routes: static ones from the TOML, dynamic ones from a :class:`RouteSource`.

The request path reads one dict, ``Router.routes`` (model name -> :class:`ModelRoute`), and
nothing else: no database query, no lock. This table keeps that dict current:

- a background task compares the source's cheap fingerprint every ``refresh_s`` and, when it
  changed, reloads the dynamic routes and swaps in a new dict (one assignment: a request that
  already holds a route keeps it, and with it its providers);
- a request for a model the dict does not know triggers one immediate refresh before it is
  answered 404, so a model registered a moment ago works on its first request. Concurrent
  misses share one refresh, one started after they arrived: a flood of unknown names costs the
  source one query at a time;
- routes whose description did not change keep their route object (providers, pools,
  breakers); only new or changed ones are built;
- a static route wins over a dynamic one of the same name (logged); a dynamic route that does
  not validate or cannot be built is logged and skipped, the others still apply;
- providers of removed or replaced routes are closed after a grace period (by default the
  route's ``timeouts.total_ms``, the longest a request on it may wait), not while requests
  that started on them may still use them.

Example::

    table = RouteTable(router, static=routes, source=source, build=builder, refresh_s=1.0)
    await table.start()
    route = router.routes.get(name) or await table.find(name)   # 404 if still unknown
    ...
    await table.close()
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from serve.config import ModelConfig
from serve.gateway.errors import ModelNotFound
from serve.gateway.routesource import DynamicRoute, RouteSource
from serve.gateway.routing import ModelRoute, Router

log = logging.getLogger(__name__)

SOURCE_TIMEOUT_S = 10.0

RouteBuilder = Callable[[str, ModelConfig, dict[str, str]], ModelRoute]
"""Builds the route (providers, breakers) of model NAME from its table and runtime deployments."""


@dataclass(slots=True, eq=False)
class _Dynamic:
    spec: DynamicRoute
    route: ModelRoute


class RouteTable:
    def __init__(
        self,
        router: Router,
        *,
        static: dict[str, ModelRoute],
        source: RouteSource | None,
        build: RouteBuilder,
        refresh_s: float = 1.0,
        close_grace_s: float | None = None,
    ) -> None:
        self.router = router
        self._static = dict(static)
        self._source = source
        self._build = build
        self._refresh_s = refresh_s
        self._close_grace_s = close_grace_s
        self._dynamic: dict[str, _Dynamic] = {}
        self._fingerprint: str | None = None
        self._inflight: asyncio.Task | None = None
        self._inflight_no = 0
        self._started = 0  # refreshes started so far
        self._poller: asyncio.Task | None = None
        self._closing: set[asyncio.Task] = set()
        router.routes = dict(self._static)

    @property
    def dynamic(self) -> list[str]:
        """Names of the dynamic routes served now."""
        return list(self._dynamic)

    async def start(self) -> None:
        """Load the dynamic routes once, then follow the source. A source that fails here is
        logged: the gateway starts with its static routes and the poller tries again."""
        if self._source is None:
            return
        await self._shared_refresh()
        self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def close(self) -> None:
        """Stop following the source; close every provider, those in their grace period too."""
        if self._poller is not None:
            self._poller.cancel()
            try:
                await self._poller
            except asyncio.CancelledError:
                pass
        if self._inflight is not None and not self._inflight.done():
            self._inflight.cancel()
            try:
                await self._inflight
            except (asyncio.CancelledError, Exception):
                pass
        for task in list(self._closing):
            task.cancel()  # _close_later closes its providers when cancelled
        if self._closing:
            await asyncio.wait(self._closing)
        routes = [*self._static.values(), *(d.route for d in self._dynamic.values())]
        self._dynamic = {}
        self.router.routes = {}
        for route in routes:
            await _close_providers(route)
        if self._source is not None:
            await self._source.close()

    async def find(self, model: str) -> ModelRoute:
        """The route of ``model`` after a miss: one refresh that started after this call (shared
        with concurrent misses), then the dict again; :class:`ModelNotFound` if still unknown."""
        if self._source is not None:
            await self._shared_refresh(after=self._started)
        route = self.router.routes.get(model)
        if route is None:
            raise ModelNotFound(model)
        return route

    # --- refreshing --------------------------------------------------------------------------

    async def _shared_refresh(self, *, after: int | None = None) -> None:
        """Join the refresh in flight, or start one; with ``after``, until one has run that
        started later than refresh number ``after`` (at most two: the one in flight, then one)."""
        while True:
            if self._inflight is None or self._inflight.done():
                self._started += 1
                self._inflight_no = self._started
                self._inflight = asyncio.get_running_loop().create_task(self._refresh())
            task, number = self._inflight, self._inflight_no
            try:
                await asyncio.shield(task)
            except Exception as exc:  # the source is down: keep serving the routes we have
                log.warning("refreshing the gateway's routes failed: %s", exc)
                return
            if after is None or number > after:
                return

    async def _refresh(self) -> None:
        assert self._source is not None
        fingerprint = await asyncio.wait_for(self._source.fingerprint(), SOURCE_TIMEOUT_S)
        if fingerprint == self._fingerprint:
            return
        loaded = await asyncio.wait_for(self._source.load(), SOURCE_TIMEOUT_S)
        self._apply(loaded)
        self._fingerprint = fingerprint

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            await self._shared_refresh()

    def _apply(self, loaded: dict[str, DynamicRoute]) -> None:
        """Build what is new or changed, keep what is the same, then swap the dict in one step."""
        dynamic: dict[str, _Dynamic] = {}
        for name, spec in loaded.items():
            if name in self._static:
                log.warning("route %r (%s) ignored: the configuration file defines that model", name, spec.origin)
                continue
            old = self._dynamic.get(name)
            if old is not None and old.spec == spec:
                dynamic[name] = old
                continue
            try:
                config = ModelConfig.model_validate(spec.table)
                route = self._build(name, config, spec.runtime_deployments)
            except Exception as exc:  # one bad row must not take the other routes down
                log.error("route %r (%s) skipped: %s", name, spec.origin, _one_line(exc))
                continue
            dynamic[name] = _Dynamic(spec, route)
            log.info("route %r (%s) %s", name, spec.origin, "changed" if old is not None else "added")
        retired = [d.route for name, d in self._dynamic.items() if dynamic.get(name) is not d]
        for name in self._dynamic.keys() - dynamic.keys():
            log.info("route %r removed", name)
        self._dynamic = dynamic
        self.router.routes = {**{name: d.route for name, d in dynamic.items()}, **self._static}
        for route in retired:
            grace = self._close_grace_s if self._close_grace_s is not None else route.config.timeouts.total_ms / 1000
            task = asyncio.get_running_loop().create_task(_close_later(route, grace))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)


async def _close_later(route: ModelRoute, grace_s: float) -> None:
    try:
        await asyncio.sleep(grace_s)
    finally:  # cancelled when the gateway shuts down: close now
        await _close_providers(route)


async def _close_providers(route: ModelRoute) -> None:
    for rank in route.ranks:
        for slot in rank:
            try:
                await slot.provider.close()
            except Exception as exc:
                log.warning("closing provider %s failed: %s", slot.provider.name, exc)


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:1000]
