"""Model runtimes: the engine interface, the CPU engines, and their Ray Serve deployments.

``serve.runtimes.cpu`` and ``serve.runtimes.embeddings`` import torch and transformers; they
are imported where an engine is built (in runtime replicas), not here.
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
