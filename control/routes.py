"""The gateway's dynamic routes from the deployments table (:class:`serve.gateway.routesource.RouteSource`).

A deployment the pipeline has registered (``registered`` true, ``deleted_at`` empty) is served
under its ``name``. Its ``endpoint`` column says where (the contract the deployment steps write)::

    {"provider": {"type": "local", "runtime": "dep-abc"}, "deployment": "TextRuntime"}
    {"provider": {"type": "openai", "base_url": "http://10.0.0.5:8000/v1", "model": "chat"}}

``provider`` is one ``[models.X.providers.P]`` table exactly as in the TOML; ``deployment``
the Serve deployment of a ``local`` runtime app. ``pricing`` is a ``[models.X.pricing]`` table,
used for the cost column. The route's provider table is named after the deployment id, so
metrics rows say which deployment answered (``local:dep-abc``, ``openai:dep_...``).

The gateway validates each table as it would a ``[models]`` section: a row it cannot use is
logged there and skipped, and so is a row whose ``endpoint`` does not have this shape here.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from control.db import create_engine, parse_url
from control.models import Deployment
from serve.gateway.routesource import DynamicRoute

log = logging.getLogger(__name__)


def deployment_route(dep_id: str, name: str, endpoint: Any, pricing: Any) -> DynamicRoute:
    """The route of one deployment row; :class:`ValueError` when ``endpoint`` is not the contract's shape."""
    if not isinstance(endpoint, dict) or not isinstance(endpoint.get("provider"), dict):
        raise ValueError("endpoint has no 'provider' table")
    provider = endpoint["provider"]
    table: dict[str, Any] = {"providers": {dep_id: provider}}
    if pricing is not None:
        table["pricing"] = pricing
    runtime_deployments: dict[str, str] = {}
    if provider.get("type") == "local":
        deployment = endpoint.get("deployment")
        if not isinstance(deployment, str) or not deployment:
            raise ValueError("endpoint of a local provider has no 'deployment' (the Serve deployment name)")
        runtime = provider.get("runtime") or name
        runtime_deployments[str(runtime)] = deployment
    return DynamicRoute(table=table, runtime_deployments=runtime_deployments, origin=f"deployment {dep_id}")


class DatabaseRouteSource:
    """:class:`serve.gateway.routesource.RouteSource` over the deployments table.

    Built from a URL alone and picklable, so it can be sent to Ray Serve replicas: the engine is
    created on first use, in the process and event loop that uses it, and is not pickled.

    >>> source = DatabaseRouteSource("sqlite:///var/foundry.db")
    >>> # await source.fingerprint(); await source.load(); await source.close()
    """

    def __init__(self, database_url: str) -> None:
        parse_url(database_url, is_async=True)  # a bad URL fails here, not in a replica
        self._url = database_url
        self._engine: AsyncEngine | None = None

    def __getstate__(self) -> dict:
        return {"database_url": self._url}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["database_url"])

    def __repr__(self) -> str:
        shown = parse_url(self._url, is_async=True).render_as_string(hide_password=True)
        return f"DatabaseRouteSource({shown!r})"

    async def fingerprint(self) -> str:
        """Changes with every insert, delete or update of a deployment: row count, the last
        ``updated_at`` and the sum of ``version`` (bumped by every change, even within one clock tick)."""
        query = select(func.count(Deployment.id), func.max(Deployment.updated_at), func.sum(Deployment.version))
        async with self._engine_().connect() as conn:
            total, last, versions = (await conn.execute(query)).one()
        return f"{total}:{last.isoformat() if last is not None else '-'}:{versions or 0}"

    async def load(self) -> dict[str, DynamicRoute]:
        """Every live, registered deployment by served name; rows with a malformed endpoint are logged and skipped."""
        query = select(Deployment.id, Deployment.name, Deployment.endpoint, Deployment.pricing).where(
            Deployment.registered.is_(True), Deployment.deleted_at.is_(None)
        )
        async with self._engine_().connect() as conn:
            rows = (await conn.execute(query)).all()
        routes = {}
        for dep_id, name, endpoint, pricing in rows:
            try:
                routes[name] = deployment_route(dep_id, name, endpoint, pricing)
            except ValueError as exc:
                log.error("deployment %s (%r) is not routed: %s", dep_id, name, exc)
        return routes

    async def close(self) -> None:
        if self._engine is not None:
            engine, self._engine = self._engine, None
            await engine.dispose()

    def _engine_(self) -> AsyncEngine:
        if self._engine is None:
            self._engine = create_engine(self._url, pool_size=1)
        return self._engine
