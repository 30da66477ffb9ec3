"""The one TOML file that describes a Foundry stack, and where its state lives.

``load_config(path)`` parses and validates it; ``default_config()`` is the built-in default
(``control/default.toml``, printed by ``foundry config default``). Errors name the file and the
key: ``config.toml: models.chat.providers.p.type: unknown provider type 'x' (valid: local)``.
"""

from __future__ import annotations

import os
import tomllib
from typing import Literal
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, ValidationError, field_validator, model_validator

from serve.config import (
    ENGINES,
    PROVIDER_TYPES,
    GatewayConfig,
    LimitsConfig,
    LocalProvider,
    MetricsConfig,
    ModelConfig,
    RuntimeConfig,
)


class ConfigError(Exception):
    """A config file that cannot be used; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    ingress: Literal["haproxy", "proxy"] = Field(
        default="haproxy",
        description='"haproxy": Ray Serve\'s HAProxy ingress sends requests straight to the gateway '
        'replicas\' own HTTP servers; "proxy": Serve\'s Python HTTP proxy (one more hop)',
    )


class DatabaseConfig(_Strict):
    url: str = Field(default="", description="empty: SQLite at $FOUNDRY_HOME/foundry.db")

    @field_validator("url")
    @classmethod
    def _usable_url(cls, url: str) -> str:
        if url:
            from control.db import DatabaseURLError, parse_url

            try:
                parse_url(url, is_async=False)
            except DatabaseURLError as exc:
                raise ValueError(str(exc)) from None
        return url


class ControlConfig(_Strict):
    num_cpus: PositiveFloat = 0.1


class AuthConfig(_Strict):
    """Sign-in through an OIDC issuer (``[auth]``). Without it, only API keys work."""

    oidc_issuer: str = Field(
        pattern=r"^https?://[^\s/]+", description="discovery at <issuer>/.well-known/openid-configuration"
    )
    oidc_audience: str = Field(min_length=1, description="the 'aud' tokens must carry (the client id)")
    roles_claim: str = Field(default="roles", min_length=1, description='dotted path, e.g. "realm_access.roles"')
    admin_roles: list[str] = Field(default=["foundry-admin"], description="roles that make a global admin")
    email_claim: str = Field(default="email", min_length=1)
    jwks_refresh_s: PositiveFloat = Field(default=300.0, description="how long the issuer's keys are cached")


class PipelinesConfig(_Strict):
    database_url: str = Field(
        default="",
        description="where runs are kept (DBOS's tables and the runs' view); empty: SQLite at "
        "$FOUNDRY_HOME/pipelines.db; PostgreSQL: postgresql://user:password@host:5432/pipelines",
    )
    executor_id: str = Field(
        default="",
        max_length=100,
        description="DBOS executor id: unique per live executor, the same across its restarts (a restarted "
        "executor resumes the runs of its id); empty: derived from the host name and $FOUNDRY_HOME",
    )

    @field_validator("database_url")
    @classmethod
    def _usable_url(cls, url: str) -> str:
        if url:
            from sqlalchemy.engine import make_url
            from sqlalchemy.exc import ArgumentError

            try:
                backend = make_url(url).get_backend_name()
            except ArgumentError:
                raise ValueError(f"not a database URL: {url.split('@')[-1]!r}") from None
            if backend not in ("sqlite", "postgresql"):
                raise ValueError(f"unsupported database {backend!r} (sqlite:/// or postgresql://)")
        return url


class FoundryConfig(_Strict):
    server: ServerConfig = ServerConfig()
    database: DatabaseConfig = DatabaseConfig()
    metrics: MetricsConfig = MetricsConfig()
    gateway: GatewayConfig = GatewayConfig()
    control: ControlConfig = ControlConfig()
    auth: AuthConfig | None = None
    limits: LimitsConfig = LimitsConfig()
    pipelines: PipelinesConfig = PipelinesConfig()
    runtimes: dict[str, RuntimeConfig] = {}
    models: dict[str, ModelConfig] = {}

    @model_validator(mode="after")
    def _check_references(self) -> FoundryConfig:
        for model_name, model in self.models.items():
            for fallback in model.fallback_models:
                if fallback not in self.models:
                    raise ValueError(
                        f"models.{model_name}.fallback_models names {fallback!r}, but there is no "
                        f"[models.{fallback!r}] table"
                    )
            for provider_name, provider in model.providers.items():
                if isinstance(provider, LocalProvider):
                    runtime = provider.runtime or model_name
                    if runtime not in self.runtimes:
                        key = f"models.{model_name}.providers.{provider_name}"
                        raise ValueError(
                            f"{key}: local provider refers to runtime {runtime!r}, but there is no "
                            f"[runtimes.{runtime!r}] table (defined: {', '.join(self.runtimes) or 'none'})"
                        )
        return self

    def local_runtime(self, model_name: str, provider: LocalProvider) -> str:
        return provider.runtime or model_name


def ray_environment(config: FoundryConfig, home: Path | None = None) -> dict[str, str]:
    """Environment a local Ray cluster must start with for this config. Ray reads these when its
    modules are imported and when it spawns workers, so set them before importing ``ray.serve``.
    With ``home``, Serve's HAProxy keeps its files in a directory of that home's own."""
    env = {
        # Ray starts workers at nice 15 (batch jobs yielding to the driver); here the workers
        # *are* the service.
        "RAY_worker_niceness": "0",
        # Serve marks its proxy unhealthy after 3 missed checks of 5-10 s; on a small machine
        # busy loading models, HAProxy's first start can take longer than that.
        "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "30",
        "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "30",
        # Ray's GCS keeps the events of the last 100,000 tasks (about 1.3 KB each); every call of
        # a runtime through its handle is one, so under steady traffic the GCS grew 11% in a
        # 20,000-request soak and would keep growing to ~130 MB. The dashboard's recent tasks
        # need far fewer.
        "RAY_task_events_max_num_task_in_gcs": "10000",
    }
    if config.server.ingress == "haproxy":
        env["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
        # On shutdown a replica stays reachable this long so load balancers can deregister it;
        # Serve's HAProxy is the only one here, and it learns at once.
        env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] = "2"
        if home is not None:
            from control.leftovers import haproxy_paths

            env.update(haproxy_paths(home))
        # HAProxy's stats and Prometheus listeners bind every interface on fixed ports (8404,
        # 9101) unless told otherwise: a second stack on the machine could not start. Free ones.
        env["RAY_SERVE_HAPROXY_STATS_PORT"] = str(_free_port())
        # With its metrics on, HAProxy sends the manager actor a datagram per request, parsed
        # into serve_haproxy_* metrics: ~0.08 cores at 700 req/s, for what the gateway's own
        # metrics already record (in Ray's metrics too). Set it to "1" in the environment to keep them.
        env["RAY_SERVE_HAPROXY_METRICS_ENABLED"] = "0"
        env["RAY_SERVE_HAPROXY_METRICS_PORT"] = str(_free_port())
    return env


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def foundry_home() -> Path:
    """``$FOUNDRY_HOME``, default ``~/.foundry``: every piece of state of a local stack."""
    return Path(os.environ.get("FOUNDRY_HOME") or Path.home() / ".foundry").expanduser().resolve()


def default_config_text() -> str:
    return resources.files("control").joinpath("default.toml").read_text()


def default_config() -> FoundryConfig:
    return parse_config(default_config_text(), source="<default config>", base_dir=Path.cwd())


def load_config(path: str | Path) -> FoundryConfig:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from exc
    return parse_config(text, source=str(path), base_dir=path.resolve().parent)


def parse_config(text: str, *, source: str, base_dir: Path) -> FoundryConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from exc
    try:
        config = FoundryConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: " + "; ".join(_describe(e) for e in exc.errors())) from exc
    return _resolve_paths(config, base_dir)


def _describe(error: dict) -> str:
    loc = ".".join(str(p) for p in _strip_union_tags(error["loc"]))
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{loc}: unknown key"
    if kind == "union_tag_invalid":
        ctx = error.get("ctx", {})
        return f"{loc}.type: unknown provider type {ctx.get('tag')!r} (valid: {ctx.get('expected_tags')})"
    if kind == "runtime_engine":
        engine = error["input"].get("engine") if isinstance(error.get("input"), dict) else None
        return f"{loc}.engine: unknown engine {engine!r} (valid: {', '.join(ENGINES)})"
    if kind == "union_tag_not_found":
        return f"{loc}: missing key 'type'"
    if kind == "value_error":
        message = str(error.get("ctx", {}).get("error", error["msg"]))
        return message if not loc or message.startswith("models.") else f"{loc}: {message}"
    return f"{loc}: {error['msg']}" if loc else error["msg"]


_TAGGED = {("runtimes", engine) for engine in ENGINES}


def _strip_union_tags(loc: tuple) -> list:
    """pydantic puts the discriminator value into the location (``providers.p.local.foo``);
    users wrote ``providers.p.foo``."""
    parts = list(loc)
    for i in range(len(parts) - 2):
        if (parts[i], parts[i + 2]) in _TAGGED or parts[i] == "providers" and parts[i + 2] in PROVIDER_TYPES:
            del parts[i + 2]
            break
    return parts


def _resolve_paths(config: FoundryConfig, base_dir: Path) -> FoundryConfig:
    """Relative runtime model paths resolve against the config file's directory."""
    runtimes = {}
    for name, rt in config.runtimes.items():
        if not rt.model.startswith("builtin:") and not Path(rt.model).expanduser().is_absolute():
            rt = rt.model_copy(update={"model": str((base_dir / rt.model).resolve())})
        runtimes[name] = rt
    return config.model_copy(update={"runtimes": runtimes})
