"""Where the gateway sends a model's requests: runtimes of this stack (``local``) and, later,
outside OpenAI-compatible, Azure, Anthropic and Together providers."""

from serve.providers.base import Provider
from serve.providers.local import LocalProvider, runtime_app_name

__all__ = ["LocalProvider", "Provider", "runtime_app_name"]
