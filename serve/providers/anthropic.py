"""Anthropic's Messages API, translated to and from the OpenAI shapes the gateway speaks.

Request (``POST {base_url}/v1/messages``, headers ``x-api-key`` and ``anthropic-version``)::

    OpenAI                               Anthropic
    system/developer messages        ->  top-level "system" (joined by blank lines)
    user/assistant messages          ->  "messages", consecutive same-role ones merged
                                         (other roles count as user; empty ones are dropped)
    prompt (completions)             ->  one user message
    max_tokens                       ->  max_tokens (required; cfg.default_max_tokens if unset)
    temperature                      ->  temperature, clamped to [0, 1]
    top_p                            ->  top_p, only when < 1 (recent models refuse both)
    stop                             ->  stop_sequences
    seed                             ->  (dropped: no equivalent; OpenAI's is best effort too)
    presence_penalty, frequency_penalty, logit_bias
                                     ->  refused when set (UnsupportedParameter, a 400 naming
                                         it): no equivalent, and dropping them changes the answer

Answer: :meth:`AnthropicMessagesProvider.generate` requests a stream, :meth:`complete` one
``message`` body (``stream: false``; its text blocks joined, ``stop_reason`` and ``usage`` as
below). The stream::

    message_start        input tokens (cache reads and writes included)
    content_block_delta  text_delta -> one TokenDelta each; other delta types are skipped
    message_delta        stop_reason, cumulative output tokens
    message_stop         the final TokenDelta: finish_reason and usage
    error                UpstreamStatus with the HTTP status of its error type
    ping, content_block_start/stop: nothing

    stop_reason  end_turn, stop_sequence, pause_turn -> "stop"   max_tokens -> "length"
                 tool_use -> "tool_calls"                         refusal -> "content_filter"

Anthropic has no embeddings API: :meth:`AnthropicMessagesProvider.embed` raises
:class:`EmbeddingsUnsupported`, which is not retryable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import orjson

from serve.config import AnthropicProvider
from serve.providers._http import UpstreamClient
from serve.providers._sse import ServerSentEvent
from serve.providers.errors import (
    ProviderError,
    UnsupportedOperation,
    UnsupportedParameter,
    UpstreamConnectError,
    UpstreamStatus,
)
from serve.runtimes.engine import ChatMessage, EmbeddingResult, GenerateRequest, TokenDelta

MESSAGES_PATH = "/v1/messages"

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# The HTTP status each error type is sent with, for errors that arrive inside a stream.
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "timeout_error": 504,
    "api_error": 500,
    "overloaded_error": 529,
}


class EmbeddingsUnsupported(UnsupportedOperation):
    """The provider has no embeddings API; no retry or other attempt at it can help."""

    status = 400
    error_type = "invalid_request_error"
    code = "embeddings_not_supported"


class AnthropicMessagesProvider:
    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        model: str,
        api_key: str | None,
        anthropic_version: str = "2023-06-01",
        default_max_tokens: int = 4096,
        max_connections: int = 256,
    ) -> None:
        self.name = name
        self.model = model
        self.default_max_tokens = default_max_tokens
        headers = {"anthropic-version": anthropic_version}
        if api_key:
            headers["x-api-key"] = api_key
        self._http = UpstreamClient(
            name, base_url, headers=headers, max_connections=max_connections, secret=api_key
        )

    @classmethod
    def from_config(
        cls,
        model: str,
        name: str,
        cfg: AnthropicProvider,
        api_key: str | None,
    ) -> AnthropicMessagesProvider:
        """The provider of table ``[models.<model>.providers.<name>]``; the upstream model is
        ``cfg.model``, else ``model``."""
        return cls(
            f"{cfg.type}:{name}",
            base_url=cfg.base_url,
            model=cfg.model or model,
            api_key=api_key,
            anthropic_version=cfg.anthropic_version,
            default_max_tokens=cfg.default_max_tokens,
            max_connections=cfg.max_connections,
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self._http.target}>"

    async def generate(self, request: GenerateRequest) -> AsyncIterator[TokenDelta]:
        async with aclosing(self._http.events(MESSAGES_PATH, self.request_body(request))) as events:
            async for delta in _anthropic_deltas(self._http, events):
                yield delta

    async def complete(self, request: GenerateRequest) -> TokenDelta:
        answer = await self._http.post(MESSAGES_PATH, self.request_body(request, stream=False))
        if not isinstance(answer, dict):
            raise self._http.protocol_error("an answer that is not a JSON object")
        if answer.get("type") == "error":
            raise _body_error(self._http, answer)
        try:
            text = "".join(block["text"] for block in answer["content"] if block.get("type") == "text")
            usage = answer.get("usage") or {}
        except (KeyError, TypeError, AttributeError):
            raise self._http.protocol_error("a message without content[].text") from None
        if not isinstance(usage, dict):
            raise self._http.protocol_error("a message whose usage is not an object")
        finish = FINISH_REASONS.get(answer.get("stop_reason") or "", "stop")
        return TokenDelta(text, finish, _input_tokens(usage, 0), _int(usage.get("output_tokens"), int(bool(text))) or 0)

    async def embed(self, texts: list[str]) -> EmbeddingResult:
        raise EmbeddingsUnsupported(self.name, "Anthropic has no embeddings API; route embeddings to another provider")

    async def close(self) -> None:
        await self._http.aclose()

    def request_body(self, request: GenerateRequest, *, stream: bool = True) -> dict[str, Any]:
        """The Messages API body for ``request``."""
        params = request.params
        for name, value in (("logit_bias", params.logit_bias), ("presence_penalty", params.presence_penalty),
                            ("frequency_penalty", params.frequency_penalty)):  # fmt: skip
            if value:
                raise UnsupportedParameter(self.name, name, f"Anthropic's Messages API has no '{name}'; send the request without it.")
        if request.messages is not None:
            system, messages = to_anthropic_messages(request.messages)
        else:
            system, messages = None, [{"role": "user", "content": request.prompt or ""}]
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": params.max_tokens or self.default_max_tokens,
            "messages": messages,
            "stream": stream,
            "temperature": min(1.0, max(0.0, params.temperature)),
        }
        if system is not None:
            body["system"] = system
        if params.top_p < 1.0:
            body["top_p"] = params.top_p
        if params.stop:
            body["stop_sequences"] = list(params.stop)
        return body


def to_anthropic_messages(messages: tuple[ChatMessage, ...]) -> tuple[str | None, list[dict[str, str]]]:
    """(system, messages): system prompts lifted out, roles made to alternate."""
    system: list[str] = []
    out: list[dict[str, str]] = []
    for message in messages:
        if message.role in ("system", "developer"):
            if message.content:
                system.append(message.content)
            continue
        if not message.content:
            continue  # Anthropic refuses empty text blocks
        role = "assistant" if message.role == "assistant" else "user"
        if out and out[-1]["role"] == role:
            out[-1]["content"] += "\n\n" + message.content
        else:
            out.append({"role": role, "content": message.content})
    return ("\n\n".join(system) if system else None), out


async def _anthropic_deltas(http: UpstreamClient, events: AsyncIterator[ServerSentEvent]) -> AsyncIterator[TokenDelta]:
    prompt_tokens = 0
    output_tokens: int | None = None
    chunks = 0
    stop_reason: str | None = None
    async for event in events:
        try:
            payload = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            raise http.protocol_error("a stream event that is not JSON") from None
        if not isinstance(payload, dict):
            raise http.protocol_error("a stream event that is not a JSON object")
        kind = payload.get("type") or event.event
        try:
            if kind == "content_block_delta":
                delta = payload["delta"]
                if delta.get("type") == "text_delta" and delta.get("text"):
                    chunks += 1
                    yield TokenDelta(delta["text"], None, prompt_tokens, chunks)
            elif kind == "message_start":
                usage = payload["message"].get("usage") or {}
                prompt_tokens = _input_tokens(usage, prompt_tokens)
                output_tokens = _int(usage.get("output_tokens"), output_tokens)
            elif kind == "message_delta":
                stop_reason = payload.get("delta", {}).get("stop_reason") or stop_reason
                usage = payload.get("usage") or {}
                prompt_tokens = _input_tokens(usage, prompt_tokens)
                output_tokens = _int(usage.get("output_tokens"), output_tokens)
            elif kind == "message_stop":
                finish = FINISH_REASONS.get(stop_reason or "", "stop")
                await http.drain(events)
                yield TokenDelta("", finish, prompt_tokens, chunks if output_tokens is None else output_tokens)
                return
            elif kind == "error":
                raise _body_error(http, payload)
        except (KeyError, TypeError, AttributeError):
            raise http.protocol_error(f"a {kind} event without its fields") from None
    raise UpstreamConnectError(http.provider, f"the stream from {http.target} ended before message_stop")


def _input_tokens(usage: dict[str, Any], default: int) -> int:
    """Prompt tokens: Anthropic counts cache reads and writes apart from ``input_tokens``."""
    if not isinstance(usage.get("input_tokens"), int):
        return default
    keys = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    return sum(usage[key] for key in keys if isinstance(usage.get(key), int))


def _int(value: Any, default: int | None) -> int | None:
    return value if isinstance(value, int) else default


def _body_error(http: UpstreamClient, payload: dict[str, Any]) -> UpstreamStatus:
    """An ``error`` event or answer: its ``error.type`` mapped to the status Anthropic gives it."""
    error = payload.get("error") or {}
    error_type = error.get("type") if isinstance(error, dict) else None
    return http.error_from_body(ERROR_STATUS.get(error_type or "", 500), error)
