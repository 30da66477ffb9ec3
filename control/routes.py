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

from control.db import ReplicaDatabase
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


class DatabaseRouteSource(ReplicaDatabase):
    """:class:`serve.gateway.routesource.RouteSource` over the deployments table.

    Picklable, with its engine made where it is used (:class:`control.db.ReplicaDatabase`).

    >>> source = DatabaseRouteSource("sqlite:///var/foundry.db")
    >>> # await source.fingerprint(); await source.load(); await source.close()
    """

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

