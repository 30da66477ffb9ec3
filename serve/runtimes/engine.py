"""The engine interface every model runtime implements (our CPU engine, vLLM).

A text engine turns a prompt into an async stream of :class:`TokenDelta`; an embedding engine
turns a batch of texts into vectors. Engines know nothing about HTTP or OpenAI: the gateway
formats their output, the runtime deployment hosts them on Ray Serve.

Errors::

    EngineError                  base; carries an OpenAI-style type/code and HTTP status
    ├── InvalidRequest           400: the prompt or parameters cannot be served
    │                            (prompt longer than the context window, ...)
    └── EngineOverloaded         503: the waiting queue is full
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from serve.errors import FoundryError


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Per-request decoding parameters. ``temperature == 0`` means greedy decoding.
    ``max_tokens=None``: the client set no limit; each runtime or provider applies its default.

    The logit adjustments are OpenAI's, applied before temperature and top-p (greedy rows too):
    ``logit_bias`` adds its value to each listed token id's logit; ``frequency_penalty``
    subtracts ``penalty * count`` and ``presence_penalty`` subtracts ``penalty`` once for each
    token the completion has produced so far (the prompt does not count)."""

    max_tokens: int | None = 16
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias), ids ascending

    @property
    def penalised(self) -> bool:
        """Whether the completion's own tokens change its next logits."""
        return bool(self.presence_penalty or self.frequency_penalty)


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    """What the gateway sends a text runtime: either ``messages`` (chat) or ``prompt``."""

    request_id: str
    params: SamplingParams = field(default_factory=SamplingParams)
    prompt: str | None = None
    messages: tuple[ChatMessage, ...] | None = None


@dataclass(frozen=True, slots=True)
class TokenDelta:
    """One step of a generation stream.

    ``text`` is the new text since the previous delta (may be empty while a possible stop
    sequence or an incomplete UTF-8 character is held back). The last delta of a stream has
    ``finish_reason`` set to ``"stop"`` (EOS or a stop sequence) or ``"length"``. Token counts
    are cumulative, so the last delta carries the totals.
    """

    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class EmbeddingResult:
    vectors: list[list[float]]
    prompt_tokens: int


class EngineError(FoundryError):
    """A runtime's refusal or failure (:mod:`serve.errors`); the gateway passes it on as is."""

    code: str | None = "engine_error"


class InvalidRequest(EngineError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class EngineOverloaded(EngineError):
    status = 503
    type = "server_error"
    code = "engine_overloaded"


@runtime_checkable
class TextEngine(Protocol):
    """A generative engine. Implementations: ``serve.runtimes.cpu.CPUEngine``,
    ``serve.runtimes.vllm.VLLMEngine``."""

    model_name: str
    max_model_len: int

    def render_chat(self, messages: tuple[ChatMessage, ...]) -> str:
        """Format chat messages as a prompt (the tokenizer's chat template, or a plain fallback)."""
        ...

    def generate(
        self, prompt: str, params: SamplingParams, request_id: str, *, prompt_param: str = "prompt"
    ) -> AsyncIterator[TokenDelta]:
        """Stream deltas for ``prompt``. Closing the iterator early cancels the request and frees
        its batch slot. ``prompt_param`` is what a too-long prompt's 400 names (``messages`` for chat)."""
        ...

    def unfinished_requests(self) -> int:
        """Requests accepted and not yet finished or cancelled."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class EmbeddingEngine(Protocol):
    model_name: str
    dimensions: int

    async def embed(self, texts: list[str]) -> EmbeddingResult: ...

    async def close(self) -> None: ...
