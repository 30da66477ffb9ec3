"""The gateway's request handling, independent of the web framework.

Each call authenticates the key from the cache, validates the body, routes the model to a
provider, streams or collects the result, and leaves exactly one :class:`RequestRecord` with
the recorder, whatever happened.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timezone

from serve.auth import ApiKeyInfo
from serve.gateway import wire
from serve.gateway.errors import GatewayError, ModelNotFound, PermissionDenied
from serve.gateway.keycache import KeyCache
from serve.gateway.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    model_name_hint,
    parse_body,
)
from serve.metrics.actor import MetricsRecorder
from serve.metrics.records import RequestRecord
from serve.providers.base import Provider
from serve.runtimes.engine import ChatMessage, GenerateRequest, SamplingParams

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Reply:
    """What the web layer sends: a complete body, or a stream of SSE bytes."""

    status: int
    request_id: str
    body: bytes | None = None
    stream: AsyncIterator[bytes] | None = None
    provider: str = ""


class _Tracker:
    """Timing and token counts of one request; becomes its metrics row."""

    __slots__ = ("rec", "t0")

    def __init__(self, endpoint: str, request_id: str) -> None:
        self.t0 = time.perf_counter()
        self.rec = RequestRecord(
            request_id=request_id, ts=datetime.now(timezone.utc), endpoint=endpoint, model="", status=200
        )

    def key(self, info: ApiKeyInfo) -> None:
        self.rec.project_id = info.project_id
        self.rec.key_id = info.key_id

    def first_token(self) -> None:
        if self.rec.ttft_ms is None:
            self.rec.ttft_ms = (time.perf_counter() - self.t0) * 1000

    def fail(self, err: GatewayError) -> None:
        self.rec.status = err.status_code
        self.rec.error_type = err.error_type

    def finish(self) -> RequestRecord:
        self.rec.latency_ms = (time.perf_counter() - self.t0) * 1000
        return self.rec


class GatewayService:
    def __init__(self, *, providers: dict[str, list[Provider]], keys: KeyCache, recorder: MetricsRecorder) -> None:
        self._providers = providers
        self._keys = keys
        self._recorder = recorder
        self._created = int(time.time())

    # --- endpoints ---------------------------------------------------------------------------

    async def chat_completions(self, authorization: str | None, raw: bytes) -> Reply:
        return await self._generate("chat.completions", authorization, raw, chat=True)

    async def completions(self, authorization: str | None, raw: bytes) -> Reply:
        return await self._generate("completions", authorization, raw, chat=False)

    async def embeddings(self, authorization: str | None, raw: bytes) -> Reply:
        rid = "emb-" + uuid.uuid4().hex
        track = _Tracker("embeddings", rid)
        track.rec.model = model_name_hint(raw)
        try:
            key = await self._keys.authenticate(authorization)
            track.key(key)
            body = parse_body(raw, EmbeddingRequest)
            provider = self._route(body.model, key)
            track.rec.provider = provider.name
            result = await provider.embed(body.texts)
            track.first_token()
            track.rec.prompt_tokens = result.prompt_tokens
            if body.dimensions is not None and body.dimensions != len(result.vectors[0]):
                raise GatewayError(
                    f"This model returns {len(result.vectors[0])}-dimensional embeddings; "
                    f"'dimensions' must be {len(result.vectors[0])} or omitted.",
                    param="dimensions",
                )
            out = wire.embeddings(body.model, result.vectors, body.encoding_format, result.prompt_tokens)
            return Reply(200, rid, body=out, provider=provider.name)
        except GatewayError as err:
            return self._error_reply(track, err)
        except Exception:
            return self._internal_error(track)
        finally:
            self._recorder.record(track.finish())

    async def models(self, authorization: str | None) -> Reply:
        rid = "req-" + uuid.uuid4().hex
        try:
            key = await self._keys.authenticate(authorization)
        except GatewayError as err:
            return Reply(err.status_code, rid, body=err.body())
        names = [m for m in self._providers if key.models is None or m in key.models]
        return Reply(200, rid, body=wire.model_list(names, self._created))

    # --- generation ------------------------------------------------------------------------

    async def _generate(self, endpoint: str, authorization: str | None, raw: bytes, *, chat: bool) -> Reply:
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        track = _Tracker(endpoint, rid)
        track.rec.model = model_name_hint(raw)
        stream_started = False
        deltas = None
        try:
            key = await self._keys.authenticate(authorization)
            track.key(key)
            body = parse_body(raw, ChatCompletionRequest if chat else CompletionRequest)
            provider = self._route(body.model, key)
            track.rec.provider = provider.name
            track.rec.streamed = bool(body.stream)
            params = SamplingParams(
                max_tokens=body.token_limit,
                temperature=1.0 if body.temperature is None else body.temperature,
                top_p=1.0 if body.top_p is None else body.top_p,
                seed=body.seed,
                stop=body.stop_tuple,
            )
            if chat:
                messages = tuple(ChatMessage(m.role, m.text()) for m in body.messages)
                request = GenerateRequest(request_id=rid, params=params, messages=messages)
            else:
                request = GenerateRequest(request_id=rid, params=params, prompt=body.prompt_text)
            deltas = provider.generate(request)
            # Wait for the first delta before answering, so errors found at admission
            # (prompt too long, overload) still get a proper status code.
            first = await anext(deltas)
            track.first_token()
            if body.stream:
                writer = wire.ChunkWriter(
                    chat=chat, rid=rid, created=int(time.time()), model=body.model, include_usage=body.include_usage
                )
                stream_started = True
                return Reply(200, rid, stream=self._stream(track, writer, first, deltas), provider=provider.name)
            text = [first.text]
            last = first
            async for delta in deltas:
                text.append(delta.text)
                last = delta
            track.rec.prompt_tokens, track.rec.completion_tokens = last.prompt_tokens, last.completion_tokens
            build = wire.chat_completion if chat else wire.text_completion
            out = build(
                rid, int(time.time()), body.model, "".join(text), last.finish_reason, last.prompt_tokens, last.completion_tokens
            )
            return Reply(200, rid, body=out, provider=provider.name)
        except GatewayError as err:
            return self._error_reply(track, err)
        except StopAsyncIteration:
            return self._internal_error(track)
        except Exception:
            return self._internal_error(track)
        finally:
            if not stream_started:
                if deltas is not None:
                    await deltas.aclose()
                self._recorder.record(track.finish())

    async def _stream(self, track: _Tracker, writer: wire.ChunkWriter, first, deltas) -> AsyncIterator[bytes]:
        last = first
        try:
            opening = writer.first()
            if opening:
                yield opening
            if first.text or first.finish_reason:
                yield writer.delta(first.text, first.finish_reason)
            async for delta in deltas:
                last = delta
                if delta.text or delta.finish_reason:
                    yield writer.delta(delta.text, delta.finish_reason)
            track.rec.prompt_tokens, track.rec.completion_tokens = last.prompt_tokens, last.completion_tokens
            tail = writer.usage(last.prompt_tokens, last.completion_tokens)
            if tail:
                yield tail
            yield wire.DONE
        except GatewayError as err:
            # Bytes already went out: nothing can be retried; one error event, then close.
            track.fail(err)
            track.rec.completion_tokens = last.completion_tokens
            yield wire.sse_error(err)
        except Exception:
            err = GatewayError(f"Internal error while streaming (request id {track.rec.request_id}).")
            log.exception("stream %s failed", track.rec.request_id)
            track.fail(err)
            yield wire.sse_error(err)
        finally:
            if track.rec.status == 200 and last.finish_reason is None:
                # the client went away before the end
                track.rec.status = 499
                track.rec.error_type = "client_disconnected"
                track.rec.prompt_tokens, track.rec.completion_tokens = last.prompt_tokens, last.completion_tokens
            await deltas.aclose()
            self._recorder.record(track.finish())

    # --- helpers -----------------------------------------------------------------------------

    def _route(self, model: str, key: ApiKeyInfo) -> Provider:
        providers = self._providers.get(model)
        if not providers:
            raise ModelNotFound(model)
        if key.models is not None and model not in key.models:
            raise PermissionDenied(f"This API key may not use the model '{model}'.", param="model")
        return providers[0]

    def _error_reply(self, track: _Tracker, err: GatewayError) -> Reply:
        track.fail(err)
        return Reply(err.status_code, track.rec.request_id, body=err.body())

    def _internal_error(self, track: _Tracker) -> Reply:
        log.exception("request %s failed", track.rec.request_id)
        err = GatewayError(f"The server had an error processing the request (request id {track.rec.request_id}).")
        return self._error_reply(track, err)
