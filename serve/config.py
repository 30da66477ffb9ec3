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

from typing import Annotated, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    model_validator,
)


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


class _Remote(_Strict):
    """An outside provider reached over HTTP. The key comes from ``api_key_env`` (the name of an
    environment variable) or ``api_key_encrypted`` (RSA-OAEP ciphertext, hex or base64, decrypted
    with FOUNDRY_RSA_PRIVATE_KEY[_PATH]); never from the file in clear."""

    model: str | None = Field(default=None, description="the upstream model name; defaults to the table name")
    api_key_env: str | None = None
    api_key_encrypted: str | None = None
    weight: PositiveFloat = 1.0
    max_connections: PositiveInt = 256

    @model_validator(mode="after")
    def _one_key_source(self):
        if self.api_key_env and self.api_key_encrypted:
            raise ValueError("give api_key_env or api_key_encrypted, not both")
        return self


class OpenAIProvider(_Remote):
    """Any OpenAI-compatible server: OpenAI, a vLLM server, ..."""

    type: Literal["openai"]
    base_url: str = "https://api.openai.com/v1"
    default_api_key_env: ClassVar[str] = "OPENAI_API_KEY"


class TogetherProvider(_Remote):
    type: Literal["together"]
    base_url: str = "https://api.together.xyz/v1"
    default_api_key_env: ClassVar[str] = "TOGETHER_API_KEY"


class AzureProvider(_Remote):
    """Azure OpenAI: ``{base_url}/openai/deployments/{deployment}/...?api-version=...``, ``api-key`` header."""

    type: Literal["azure"]
    base_url: str | None = Field(default=None, description="https://RESOURCE.openai.azure.com; default $AZURE_OPENAI_ENDPOINT")
    deployment: str | None = Field(default=None, description="defaults to the upstream model name")
    api_version: str = "2024-10-21"
    default_api_key_env: ClassVar[str] = "AZURE_OPENAI_API_KEY"


class AnthropicProvider(_Remote):
    """Anthropic Messages API, translated to and from the OpenAI shapes."""

    type: Literal["anthropic"]
    base_url: str = "https://api.anthropic.com"
    anthropic_version: str = "2023-06-01"
    default_max_tokens: PositiveInt = 4096
    default_api_key_env: ClassVar[str] = "ANTHROPIC_API_KEY"


ProviderConfig = Annotated[
    LocalProvider | OpenAIProvider | TogetherProvider | AzureProvider | AnthropicProvider,
    Field(discriminator="type"),
]
PROVIDER_TYPES = ("local", "openai", "together", "azure", "anthropic")
RemoteProvider = OpenAIProvider | TogetherProvider | AzureProvider | AnthropicProvider


class RetryConfig(_Strict):
    num_retries: NonNegativeInt = 2
    base_delay_s: PositiveFloat = 0.1
    max_delay_s: PositiveFloat = 4.0


class TimeoutConfig(_Strict):
    ttft_ms: PositiveInt | None = Field(default=None, description="until the first token / first byte")
    total_ms: PositiveInt = Field(
        default=600_000, description="whole request; for streams also the longest gap between chunks"
    )


class PricingConfig(_Strict):
    input_per_1m: NonNegativeFloat = 0.0
    output_per_1m: NonNegativeFloat = 0.0


class ModelConfig(_Strict):
    providers: dict[str, ProviderConfig] = Field(min_length=1)
    routing: list[str | list[str]] | None = Field(
        default=None,
        description="provider names in priority order; a nested list is one rank, spread by weight. "
        "Default: the providers in file order",
    )
    fallback_models: list[str] = []
    retries: RetryConfig = RetryConfig()
    timeouts: TimeoutConfig = TimeoutConfig()
    pricing: PricingConfig = PricingConfig()

    @model_validator(mode="after")
    def _routing_names_providers(self):
        if self.routing is not None:
            seen: list[str] = []
            for rank in self.routing:
                for name in [rank] if isinstance(rank, str) else rank:
                    if name not in self.providers:
                        raise ValueError(
                            f"routing names provider {name!r}, but there is no such providers table "
                            f"(defined: {', '.join(self.providers)})"
                        )
                    if name in seen:
                        raise ValueError(f"routing names provider {name!r} twice")
                    seen.append(name)
        return self

    def ranks(self) -> list[list[str]]:
        """Providers grouped by rank, highest priority first."""
        if self.routing is None:
            return [[name] for name in self.providers]
        return [[r] if isinstance(r, str) else list(r) for r in self.routing]


class LimitsConfig(_Strict):
    """Where rate-limit and budget counters live. With ``redis_url`` (Valkey/Redis) they are shared
    by every gateway replica of every stack using that server; without it, one Ray actor holds
    them for this stack."""

    redis_url: str | None = None
    num_cpus: NonNegativeFloat = 0.0


class GatewayConfig(_Strict):
    replicas: PositiveInt = 1
    max_body_bytes: PositiveInt = Field(
        default=4 * 1024 * 1024, description="larger request bodies get 413 before they are read whole"
    )
    num_cpus: PositiveFloat = 0.2
    max_ongoing_requests: PositiveInt = 256
    key_refresh_s: PositiveFloat = 2.0
    breaker_failures: PositiveInt = Field(default=5, description="consecutive failures that open a provider's circuit")
    breaker_cooldown_s: PositiveFloat = Field(default=30.0, description="how long an open circuit skips the provider")


class MetricsConfig(_Strict):
    """Where request records go. ``embedded``: the ClickHouse engine (chdb) under FOUNDRY_HOME,
    owned by one Ray actor. ``clickhouse``: a ClickHouse server through clickhouse-connect."""

    backend: Literal["embedded", "clickhouse"] = "embedded"
    path: str | None = Field(default=None, description="chdb data directory; defaults to $FOUNDRY_HOME/metrics")
    url: str | None = Field(default=None, description="ClickHouse HTTP URL, e.g. http://user:pass@host:8123/db")
    flush_interval_ms: PositiveInt = 500
    flush_max_rows: PositiveInt = 512
