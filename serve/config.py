"""Configuration of what Serve runs: runtimes, the models the gateway exposes, metrics.

These tables are parts of the one TOML file that ``foundry up --config`` reads (the whole file is
``control.config.FoundryConfig``). Every model uses ``extra="forbid"``, so a typo fails at load
time with the key named.

    [runtimes."foundry-tiny"]               # a model runtime this stack deploys on Ray Serve
    engine = "cpu"
    task = "generate"
    model = "builtin:foundry-tiny"          # or a path to a Hugging Face model directory

    [models."foundry-tiny".providers.local] # what the gateway serves under that name
    type = "local"                          # a runtime of this stack (runtime defaults to the model name)
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuntimeConfig(_Strict):
    """A model runtime: an engine hosted by a Ray Serve deployment."""

    engine: Literal["cpu"] = "cpu"
    task: Literal["generate", "embed"] = "generate"
    model: str = Field(
        description='"builtin:foundry-tiny", "builtin:all-minilm-l6-v2", or a path to a Hugging Face model directory'
    )
    replicas: PositiveInt = 1
    num_cpus: PositiveFloat = 0.5
    max_num_seqs: PositiveInt = 16
    max_model_len: PositiveInt | None = None
    torch_threads: PositiveInt | None = None
    dtype: Literal["float32", "bfloat16"] = "float32"


class LocalProvider(_Strict):
    """A runtime of this stack, reached through a Ray Serve deployment handle."""

    type: Literal["local"]
    runtime: str | None = Field(default=None, description="name of a [runtimes] table; defaults to the model name")
    weight: PositiveFloat = 1.0


ProviderConfig = Annotated[LocalProvider, Field(discriminator="type")]
PROVIDER_TYPES = ("local",)


class ModelConfig(_Strict):
    providers: dict[str, ProviderConfig] = Field(min_length=1)


class GatewayConfig(_Strict):
    replicas: PositiveInt = 1
    num_cpus: PositiveFloat = 0.2
    max_ongoing_requests: PositiveInt = 256
    key_refresh_s: PositiveFloat = 2.0


class MetricsConfig(_Strict):
    """Where request records go. ``embedded``: the ClickHouse engine (chdb) under FOUNDRY_HOME,
    owned by one Ray actor. ``clickhouse``: a ClickHouse server through clickhouse-connect."""

    backend: Literal["embedded", "clickhouse"] = "embedded"
    path: str | None = Field(default=None, description="chdb data directory; defaults to $FOUNDRY_HOME/metrics")
    url: str | None = Field(default=None, description="ClickHouse HTTP URL, e.g. http://user:pass@host:8123/db")
    flush_interval_ms: PositiveInt = 500
    flush_max_rows: PositiveInt = 512
