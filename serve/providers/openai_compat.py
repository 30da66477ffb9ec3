"""OpenAI-compatible upstreams: OpenAI itself, a vLLM or llama.cpp server, Together (a preset).

Requests go out as ``POST {base_url}/chat/completions`` (chat), ``/completions`` (a prompt) and
``/embeddings``, with ``Authorization: Bearer <key>`` when there is a key. :meth:`generate`
requests a stream (``stream_options.include_usage``), so that the time to the first token is
the upstream's real one, and each content chunk becomes a :class:`TokenDelta`. The last delta
carries the finish reason and the upstream's usage totals (or, from a server that sends no
usage, the number of content chunks as completion tokens and 0 prompt tokens).
:meth:`complete` asks for the whole answer as one JSON body (``stream: false``): one read and
one parse instead of an event stream's, for clients that want no stream either.

Example::

    provider = OpenAICompatibleProvider.from_config("chat-main", "primary", cfg, api_key)
    async for delta in provider.generate(request):
        ...
    await provider.close()
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from typing import Any

import orjson

from serve.config import OpenAIProvider, TogetherProvider
from serve.providers._http import UpstreamClient
from serve.providers._sse import ServerSentEvent
from serve.providers.errors import UpstreamConnectError, UpstreamStatus
from serve.runtimes.engine import EmbeddingResult, GenerateRequest, TokenDelta


OPENAI_PATHS = {"chat": "/chat/completions", "completions": "/completions", "embeddings": "/embeddings"}


class OpenAICompatibleProvider:
    """A provider speaking OpenAI's chat/completions/embeddings protocol over one pooled client.

    ``model`` is the upstream model name put in request bodies (None: leave it out, as Azure's
    deployments imply it); ``paths`` maps ``chat``, ``completions`` and ``embeddings`` to URL
    paths relative to ``base_url``.
    """

    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        model: str | None,
        headers: Mapping[str, str],
        max_connections: int = 256,
        params: Mapping[str, str] | None = None,
        paths: Mapping[str, str] | None = None,
        secret: str | None = None,
    ) -> None:
        self.name = name
        self.model = model
        self._paths = dict(paths or OPENAI_PATHS)
        self._http = UpstreamClient(
            name,
            base_url,
            headers=headers,
            max_connections=max_connections,
            params=params,
            secret=secret,
        )

    @classmethod
    def from_config(
        cls,
        model: str,
        name: str,
        cfg: OpenAIProvider | TogetherProvider,
        api_key: str | None,
    ) -> OpenAICompatibleProvider:
        """The provider of table ``[models.<model>.providers.<name>]``; the upstream model is
        ``cfg.model``, else ``model``. ``api_key`` None sends no Authorization header (a local
        vLLM server needs none)."""
        return cls(
            f"{cfg.type}:{name}",
            base_url=cfg.base_url,
            model=cfg.model or model,
            headers={"authorization": f"Bearer {api_key}"} if api_key else {},
            max_connections=cfg.max_connections,
            secret=api_key,
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self._http.target}>"

    async def generate(self, request: GenerateRequest) -> AsyncIterator[TokenDelta]:
        chat = request.messages is not None
        body = self._text_body(request)
        async with aclosing(self._http.events(self._paths["chat" if chat else "completions"], body)) as events:
            async for delta in openai_deltas(self._http, events, chat=chat):
                yield delta

    async def complete(self, request: GenerateRequest) -> TokenDelta:
        chat = request.messages is not None
        answer = await self._http.post(self._paths["chat" if chat else "completions"], self._text_body(request, stream=False))
        return openai_completion(self._http, answer, chat=chat)

    async def embed(self, texts: list[str]) -> EmbeddingResult:
        body: dict[str, Any] = {"input": texts, "encoding_format": "float"}
        if self.model is not None:
            body["model"] = self.model
        answer = await self._http.post(self._paths["embeddings"], body)
        try:
            rows = sorted(answer["data"], key=lambda row: row["index"])
            vectors = [[float(x) for x in row["embedding"]] for row in rows]
            usage = answer.get("usage") or {}
            prompt_tokens = int(usage.get("prompt_tokens") or 0)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise self._http.protocol_error("an embeddings answer without data[].embedding") from None
        if len(vectors) != len(texts):
            raise self._http.protocol_error(f"{len(vectors)} embeddings for {len(texts)} inputs")
        return EmbeddingResult(vectors=vectors, prompt_tokens=prompt_tokens)

    async def close(self) -> None:
        await self._http.aclose()

    def _text_body(self, request: GenerateRequest, *, stream: bool = True) -> dict[str, Any]:
        params = request.params
        body: dict[str, Any] = {}
        if self.model is not None:
            body["model"] = self.model
        if request.messages is not None:
            body["messages"] = [{"role": m.role, "content": m.content} for m in request.messages]
        else:
            body["prompt"] = request.prompt or ""
        body["stream"] = stream
        if stream:
            body["stream_options"] = {"include_usage": True}
        if params.max_tokens is not None:
            body["max_tokens"] = params.max_tokens
        body["temperature"] = params.temperature
        body["top_p"] = params.top_p
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = list(params.stop)
        if params.presence_penalty:
            body["presence_penalty"] = params.presence_penalty
        if params.frequency_penalty:
            body["frequency_penalty"] = params.frequency_penalty
        if params.logit_bias:
            body["logit_bias"] = {str(token): bias for token, bias in params.logit_bias}
        return body


async def openai_deltas(
    http: UpstreamClient, events: AsyncIterator[ServerSentEvent], *, chat: bool
) -> AsyncIterator[TokenDelta]:
    """OpenAI stream chunks (``chat.completion.chunk`` or ``text_completion``) as deltas."""
    finish: str | None = None
    usage: dict[str, Any] | None = None
    chunks = 0
    done = False
    async for event in events:
        if event.data == b"[DONE]":
            done = True
            break
        try:
            chunk = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            raise http.protocol_error("a stream event that is not JSON") from None
        if not isinstance(chunk, dict):
            raise http.protocol_error("a stream event that is not a JSON object")
        if chunk.get("error"):  # vLLM and others report failures inside the stream
            raise _body_error(http, chunk["error"])
        try:
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk.get("choices") or ():
                if choice.get("index", 0) != 0:
                    continue
                text = choice["delta"].get("content") if chat else choice.get("text")
                if text:
                    chunks += 1
                    yield TokenDelta(text, None, 0, chunks)
                if choice.get("finish_reason"):
                    finish = str(choice["finish_reason"])
        except (KeyError, TypeError, AttributeError):
            raise http.protocol_error("a stream chunk without choices[].delta") from None
    if not done and finish is None:
        raise UpstreamConnectError(http.provider, f"the stream from {http.target} ended before it finished")
    usage = usage if isinstance(usage, dict) else {}
    prompt_tokens, completion_tokens = _count(usage, "prompt_tokens", 0), _count(usage, "completion_tokens", chunks)
    await http.drain(events)
    yield TokenDelta("", finish or "stop", prompt_tokens, completion_tokens)


def openai_completion(http: UpstreamClient, answer: Any, *, chat: bool) -> TokenDelta:
    """A non-streamed ``chat.completion`` or ``text_completion`` answer as one delta: all the
    text, the finish reason and the usage (completion tokens default to 1 per answer with text,
    as a stream without usage counts chunks)."""
    if not isinstance(answer, dict):
        raise http.protocol_error("an answer that is not a JSON object")
    if answer.get("error"):  # some servers answer 200 with an error body
        raise _body_error(http, answer["error"])
    try:
        choice = next(c for c in answer["choices"] if c.get("index", 0) == 0)
        text = (choice["message"].get("content") if chat else choice.get("text")) or ""
        finish = choice.get("finish_reason")
    except (KeyError, TypeError, AttributeError, StopIteration):
        raise http.protocol_error("an answer without choices[].message") from None
    if not isinstance(text, str):
        raise http.protocol_error("an answer whose content is not text")
    usage = answer.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    prompt_tokens, completion_tokens = _count(usage, "prompt_tokens", 0), _count(usage, "completion_tokens", int(bool(text)))
    return TokenDelta(text, str(finish) if finish else "stop", prompt_tokens, completion_tokens)


def _body_error(http: UpstreamClient, error: Any) -> UpstreamStatus:
    """An error reported inside a 200 answer or stream: its ``code`` when that is an HTTP
    status, else 502."""
    code = error.get("code") if isinstance(error, dict) else None
    return http.error_from_body(code if isinstance(code, int) and 400 <= code <= 599 else 502, error)


def _count(usage: dict[str, Any], key: str, default: int) -> int:
    value = usage.get(key)
    return value if isinstance(value, int) else default
