"""Azure OpenAI: OpenAI's protocol at Azure's addresses.

    POST {base_url}/openai/deployments/{deployment}/chat/completions?api-version={api_version}
                                                   /completions
                                                   /embeddings
    api-key: <key>

``base_url`` defaults to ``$AZURE_OPENAI_ENDPOINT`` and ``deployment`` to the upstream model
name (``model``, else the model's table name). The request bodies, streams and errors are
OpenAI's (:mod:`serve.providers.openai_compat`); the deployment names the model, so bodies
carry no ``model``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import quote


from serve.config import AzureProvider
from serve.providers.openai_compat import OpenAICompatibleProvider

ENDPOINT_ENV = "AZURE_OPENAI_ENDPOINT"


class AzureOpenAIProvider(OpenAICompatibleProvider):
    @classmethod
    def from_config(  # type: ignore[override]
        cls,
        model: str,
        name: str,
        cfg: AzureProvider,
        api_key: str | None,
        *,
        environ: Mapping[str, str] = os.environ,
    ) -> AzureOpenAIProvider:
        """Raises ValueError, naming the key, when neither ``base_url`` nor
        ``$AZURE_OPENAI_ENDPOINT`` gives the endpoint."""
        base_url = cfg.base_url or environ.get(ENDPOINT_ENV, "").strip()
        if not base_url:
            raise ValueError(
                f"models.{model}.providers.{name}.base_url is not set and ${ENDPOINT_ENV} is empty: "
                "give the Azure OpenAI endpoint, e.g. https://RESOURCE.openai.azure.com"
            )
        deployment = quote(cfg.deployment or cfg.model or model, safe="")
        prefix = f"/openai/deployments/{deployment}"
        return cls(
            f"{cfg.type}:{name}",
            base_url=base_url.rstrip("/"),
            model=None,
            headers={"api-key": api_key} if api_key else {},
            max_connections=cfg.max_connections,
            params={"api-version": cfg.api_version},
            paths={
                "chat": f"{prefix}/chat/completions",
                "completions": f"{prefix}/completions",
                "embeddings": f"{prefix}/embeddings",
            },
            secret=api_key,
        )
