"""Where the gateway's dynamic routes come from: models registered while the stack runs.

The TOML's ``[models]`` are the static routes, built once when a gateway replica starts. A
:class:`RouteSource` adds routes at run time (the control plane's deployments table is one):
the gateway's :class:`~serve.gateway.routetable.RouteTable` polls its cheap
:meth:`~RouteSource.fingerprint` and reloads when it changes, or at once when a request names a
model it does not know.

Each dynamic route is a :class:`DynamicRoute`: the same table a ``[models.NAME]`` section holds
(validated by the gateway as :class:`serve.config.ModelConfig`, so a bad row is skipped there
with the problem logged) and, for ``type = "local"`` providers, the Serve deployment of each
runtime app it names.

Example::

    DynamicRoute(
        table={"providers": {"dep_1": {"type": "local", "runtime": "dep-chat"}},
               "pricing": {"input_per_1m": 0.1, "output_per_1m": 0.4}},
        runtime_deployments={"dep-chat": "TextRuntime"},
        origin="deployment dep_1",
    )
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class DynamicRoute:
    """One model the gateway should serve, as its source describes it. Two equal values mean the
    same route: the gateway keeps the providers (pools, breakers) of a route that did not change."""

    table: dict[str, Any]  # a [models.NAME] table: providers, routing, pricing, timeouts, ...
    runtime_deployments: dict[str, str] = field(default_factory=dict)  # runtime -> Serve deployment
    origin: str = ""  # where it came from, for log lines: "deployment dep_abc"


@runtime_checkable
class RouteSource(Protocol):
    """Models registered at run time. Must be picklable (it travels to gateway replicas)."""

    async def fingerprint(self) -> str:
        """A cheap value that changes whenever a route is added, changed or removed."""
        ...

    async def load(self) -> dict[str, DynamicRoute]:
        """Every route the gateway should serve now, by model name."""
        ...

    async def close(self) -> None: ...
