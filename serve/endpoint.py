"""One runtime behind the OpenAI routes, as Ray Serve applications a Serve config names.

What a Foundry deployment runs on a cluster of its own (a KubeRay ``RayService``, or a Serve
config on a local Ray cluster): the runtime of one model (``engine = "vllm"`` or ``"cpu"``) and
our gateway in front of it under ``/v1``, guarded by one static API key read from an
environment variable (``FOUNDRY_ENDPOINT_KEY`` by default; a RayService takes it from a
Kubernetes Secret). The user's own stack reaches it as an outside ``openai`` provider and records
the requests there, so this gateway keeps no metrics store: its request rows are dropped.

Two applications, the same ``args`` (an :class:`EndpointConfig`) for both::

    applications:
    - name: runtime-NAME                 # serve.providers.local.runtime_app_name(NAME)
      import_path: serve.endpoint:build_runtime
      route_prefix: null                 # reached by handle only
      args: {name: NAME, runtime: {engine: vllm, model: /models/..., tensor_parallel_size: 2}}
    - name: gateway
      import_path: serve.endpoint:build
      route_prefix: /v1
      args: {name: NAME, runtime: {...}}

Serve builds and registers the two applications independently, so the gateway cannot take the
runtime as a static route (its replica would fail to start while the runtime application is
not yet registered). It takes it from an :class:`EndpointRouteSource` instead, which offers the
route once the runtime's deployment exists: until then the gateway answers 404 for the model.

    >>> cfg = EndpointConfig.model_validate({"name": "chat", "runtime": {"model": "builtin:foundry-tiny"}})
    >>> cfg.runtime.engine, cfg.key_env
    ('cpu', 'FOUNDRY_ENDPOINT_KEY')
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from serve.auth import ApiKeyInfo, hash_key
from serve.config import GatewayConfig, LimitsConfig, MetricsConfig, RuntimeConfig
from serve.gateway.routesource import DynamicRoute

if TYPE_CHECKING:
    from ray.serve.deployment import Application

    from serve.metrics.records import RequestRecord

__all__ = [
    "DEFAULT_KEY_ENV",
    "EndpointConfig",
    "EndpointRouteSource",
    "EnvironmentKeySource",
    "MissingEndpointKey",
    "NullMetricsSink",
    "build",
    "build_runtime",
    "serve_applications",
]

log = logging.getLogger(__name__)

DEFAULT_KEY_ENV = "FOUNDRY_ENDPOINT_KEY"
GATEWAY_APP = "gateway"
ROUTE_PREFIX = "/v1"
ENDPOINT_KEY_ID = "endpoint"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class EndpointConfig(BaseModel):
    """The ``args`` of both applications of an endpoint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="the model name clients send; also the runtime's name")
    runtime: RuntimeConfig = Field(description="a [runtimes] table: engine, model path, engine settings")
    key_env: str = Field(default=DEFAULT_KEY_ENV, pattern=_ENV_NAME.pattern,
                         description="environment variable holding the endpoint's one API key")
    home: str | None = Field(default=None, description="where built-in models are built; default $FOUNDRY_HOME or ~/.foundry")
    gateway: GatewayConfig = GatewayConfig()

    def home_path(self) -> Path:
        if self.home:
            return Path(self.home).expanduser()
        return Path(os.environ.get("FOUNDRY_HOME") or Path.home() / ".foundry").expanduser()


class MissingEndpointKey(RuntimeError):
    """The key's environment variable is unset or empty where the gateway runs."""

    def __init__(self, env: str) -> None:
        super().__init__(
            f"the endpoint's API key is not set: environment variable {env} is empty on this node "
            "(a RayService takes it from its key Secret)"
        )
        self.env = env


class EnvironmentKeySource:
    """:class:`serve.auth.KeySource` of one key read from an environment variable, in the replica.

    Picklable: only the variable's name travels. The key may not grant admin rights and carries
    no limits (the user's own gateway applies those)."""

    def __init__(self, env: str = DEFAULT_KEY_ENV) -> None:
        self.env = env

    def _secret(self) -> str:
        secret = os.environ.get(self.env, "").strip()
        if not secret:
            raise MissingEndpointKey(self.env)
        return secret

    async def fingerprint(self) -> str:
        # a changed Secret reaches a pod only through a restart, but a hash costs nothing
        return hashlib.sha256(hash_key(self._secret()).encode()).hexdigest()

    async def load_active(self) -> dict[str, ApiKeyInfo]:
        info = ApiKeyInfo(key_id=ENDPOINT_KEY_ID, project_id=ENDPOINT_KEY_ID, project=ENDPOINT_KEY_ID)
        return {hash_key(self._secret()): info}

    async def close(self) -> None:
        pass


class NullMetricsSink:
    """Where the endpoint gateway's request rows go: nowhere. The caller's gateway (the user's
    stack, in front of this endpoint) records every request it sends here."""

    async def insert(self, rows: list[RequestRecord], token: str | None = None) -> None:
        log.debug("dropped %d request rows (no metrics store on an endpoint)", len(rows))


class EndpointRouteSource:
    """:class:`serve.gateway.routesource.RouteSource` of the endpoint's one model, offered once
    the runtime application's deployment is registered with Serve.

    Its fingerprint is ``waiting`` until then (one controller call per gateway poll, off the
    event loop) and ``ready`` afterwards (no more calls: an endpoint's runtime app lives as long
    as the endpoint). Picklable: names only."""

    def __init__(self, name: str, deployment: str) -> None:
        self.name = name
        self.deployment = deployment
        self._ready = False

    @property
    def app_name(self) -> str:
        from serve.providers.local import runtime_app_name

        return runtime_app_name(self.name)

    async def fingerprint(self) -> str:
        if not self._ready:
            self._ready = await asyncio.to_thread(self._registered)
        return "ready" if self._ready else "waiting"

    def _registered(self) -> bool:
        from ray import serve

        try:  # checks with the controller; handles are cached only once the deployment exists
            serve.get_deployment_handle(self.deployment, app_name=self.app_name, _check_exists=True)
        except KeyError:
            return False
        return True

    async def load(self) -> dict[str, DynamicRoute]:
        if not self._ready:
            return {}
        table = {"providers": {"local": {"type": "local", "runtime": self.name}}}
        return {self.name: DynamicRoute(table, {self.name: self.deployment}, origin=f"runtime app {self.app_name}")}

    async def close(self) -> None:
        pass


def build_runtime(args: dict[str, Any]) -> Application:
    """The runtime application (``import_path: serve.endpoint:build_runtime``)."""
    from serve.runtimes.deployment import build_runtime as runtime_application

    cfg = EndpointConfig.model_validate(args)
    if cfg.runtime.model.startswith("builtin:"):
        from serve.runtimes.tiny import resolve_model

        resolve_model(cfg.runtime.model, cfg.home_path())  # once, here, rather than racing in replicas
    return runtime_application(cfg.name, cfg.runtime, cfg.home_path())


def build(args: dict[str, Any]) -> Application:
    """The gateway application (``import_path: serve.endpoint:build``, ``route_prefix: /v1``).

    Fails here, with the variable named, when the key's environment variable is empty: a
    gateway without its key would refuse every request.
    """
    from serve.gateway.app import build_gateway
    from serve.runtimes.deployment import deployment_name

    cfg = EndpointConfig.model_validate(args)
    keys = EnvironmentKeySource(cfg.key_env)
    keys._secret()
    return build_gateway(
        models={},
        runtime_deployments={},
        route_source=EndpointRouteSource(cfg.name, deployment_name(cfg.runtime)),
        key_source=keys,
        metrics=NullMetricsSink(),
        settings=cfg.gateway,
        metrics_settings=MetricsConfig(),
        limits=LimitsConfig(),
    )


def serve_applications(cfg: EndpointConfig) -> list[dict[str, Any]]:
    """The ``applications`` of a Serve config (``serveConfigV2``) running ``cfg``: the runtime
    first, then the gateway under ``/v1``; both with the same ``args``."""
    from serve.providers.local import runtime_app_name

    args = cfg.model_dump(mode="json", exclude_defaults=True)
    args["name"] = cfg.name
    args["runtime"] = cfg.runtime.model_dump(mode="json", exclude_defaults=True) | {"engine": cfg.runtime.engine}
    return [  # each its own copy of args: a YAML dump shows both in full
        {"name": runtime_app_name(cfg.name), "route_prefix": None, "import_path": "serve.endpoint:build_runtime",
         "args": copy.deepcopy(args)},
        {"name": GATEWAY_APP, "route_prefix": ROUTE_PREFIX, "import_path": "serve.endpoint:build",
         "args": copy.deepcopy(args)},
    ]  # fmt: skip
