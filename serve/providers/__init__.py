"""Where the gateway sends a model's requests: runtimes of this stack (``local``) and outside
OpenAI-compatible, Together, Azure OpenAI and Anthropic providers."""

from __future__ import annotations

from serve.providers.base import Provider
from serve.providers.errors import (
    ProviderError,
    UnsupportedOperation,
    UnsupportedParameter,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamStatus,
    UpstreamTimeout,
)
from serve.providers.local import LocalProvider, runtime_app_name

__all__ = [
    "LocalProvider",
    "Provider",
    "ProviderError",
    "UnsupportedOperation",
    "UnsupportedParameter",
    "UpstreamConnectError",
    "UpstreamProtocolError",
    "UpstreamStatus",
    "UpstreamTimeout",
    "build_provider",
    "runtime_app_name",
]


def build_provider(model: str, name: str, cfg, runtime_deployments: dict[str, str]) -> Provider:
    """The provider for ``[models.<model>.providers.<name>]``; credentials resolved here."""
    if cfg.type == "local":
        runtime = cfg.runtime or model
        return LocalProvider(runtime, runtime_deployments[runtime])
    from serve.secrets import resolve_api_key

    api_key = resolve_api_key(cfg, where=f"models.{model}.providers.{name}")
    if cfg.type in ("openai", "together"):
        from serve.providers.openai_compat import OpenAICompatibleProvider

        return OpenAICompatibleProvider.from_config(model, name, cfg, api_key)
    if cfg.type == "azure":
        from serve.providers.azure import AzureOpenAIProvider

        return AzureOpenAIProvider.from_config(model, name, cfg, api_key)
    if cfg.type == "anthropic":
        from serve.providers.anthropic import AnthropicMessagesProvider

        return AnthropicMessagesProvider.from_config(model, name, cfg, api_key)
    raise ValueError(f"models.{model}.providers.{name}: unknown provider type {cfg.type!r}")
