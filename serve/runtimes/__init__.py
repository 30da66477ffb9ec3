"""Model runtimes: the engine interface, the engines (ours on CPU, vLLM), their Ray Serve deployments.

``serve.runtimes.cpu``, ``serve.runtimes.embeddings`` and ``serve.runtimes.vllm`` import torch,
transformers or vLLM; they are imported where an engine is built (in runtime replicas), not here.
``serve.runtimes.placement`` decides a vLLM replica's placement group.
"""

from serve.runtimes.engine import (
    ChatMessage,
    EmbeddingEngine,
    EmbeddingResult,
    EngineError,
    EngineOverloaded,
    GenerateRequest,
    InvalidRequest,
    SamplingParams,
    TextEngine,
    TokenDelta,
)
from serve.runtimes.tiny import UnknownModel, ensure_tiny_model, minilm_path, resolve_model

__all__ = [
    "ChatMessage",
    "EmbeddingEngine",
    "EmbeddingResult",
    "EngineError",
    "EngineOverloaded",
    "GenerateRequest",
    "InvalidRequest",
    "SamplingParams",
    "TextEngine",
    "TokenDelta",
    "UnknownModel",
    "ensure_tiny_model",
    "minilm_path",
    "resolve_model",
]
