"""The gateway's request handling, independent of the web framework.

Each call authenticates the key from the cache, validates the body, asks the router for a
provider (with retries and fallbacks), streams the result or sends it whole, and leaves exactly one
:class:`RequestRecord` with the recorder and one observation in the Prometheus metrics,
whatever happened.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from serve.auth import ApiKeyInfo
from serve.gateway import wire
from serve.gateway.errors import GatewayError, InvalidRequest, PermissionDenied
from serve.gateway.keycache import KeyCache
from serve.gateway.ratelimit import Limiter, Ticket
from serve.gateway.routetable import RouteTable
from serve.gateway.errors import from_provider_error
from serve.gateway.routing import ModelRoute, Opened, Outcome
from serve.gateway.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    model_name_hint,
    parse_body,
)
from serve.gateway.telemetry import Telemetry
from serve.metrics.actor import MetricsRecorder
from serve.metrics.records import RequestRecord
from serve.providers.errors import ProviderError
from serve.request_id import new_request_id

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Reply:
    """What the web layer sends: a complete body, or a stream of SSE bytes."""

    status: int
    body: bytes | None = None
    stream: AsyncIterator[bytes] | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Kind:
    """One generation endpoint: its body, its stream's chunks and its whole response."""

    endpoint: str
    id_prefix: str
    body: type[ChatCompletionRequest] | type[CompletionRequest]
    chunks: type[wire.ChunkWriter]
    completion: Callable[..., bytes]


CHAT = _Kind("chat.completions", "chatcmpl-", ChatCompletionRequest, wire.ChatChunks, wire.chat_completion)
TEXT = _Kind("completions", "cmpl-", CompletionRequest, wire.TextChunks, wire.text_completion)


class _Tracker:
    """Timing, tokens and routing outcome of one request; becomes its metrics row."""

    __slots__ = ("rec", "t0", "outcome", "headers", "ticket", "raw", "route")

    def __init__(self, endpoint: str, request_id: str | None, raw: bytes | None, *, echo: bool) -> None:
        request_id = request_id or new_request_id()
        self.t0 = time.perf_counter()
        self.outcome = Outcome()
        self.headers = {"x-request-id": request_id} if echo else {}
        self.ticket: Ticket | None = None
        self.raw = raw  # to name the model in the record of a body that did not validate
        self.route: ModelRoute | None = None  # the request's route, kept even if it is removed meanwhile
        self.rec = RequestRecord(
            request_id=request_id, ts=datetime.now(timezone.utc), endpoint=endpoint, model="", status=200
        )

    def key(self, info: ApiKeyInfo) -> None:
        self.rec.project_id = info.project_id
        self.rec.key_id = info.key_id

    def first_token(self) -> None:
        if self.rec.ttft_ms is None:
            self.rec.ttft_ms = (time.perf_counter() - self.t0) * 1000

    def tokens(self, prompt: int, completion: int) -> None:
        self.rec.prompt_tokens, self.rec.completion_tokens = prompt, completion

    def routed(self) -> None:
        o = self.outcome
        self.rec.provider = o.provider
        self.rec.attempts = o.attempts
        self.rec.fallback_used = o.fallback_used
        if o.provider:
            self.headers["x-foundry-provider"] = o.provider

    def overhead_ms(self) -> float:
        return max(0.0, (time.perf_counter() - self.t0 - self.outcome.upstream_s) * 1000)

    def fail(self, err: GatewayError) -> None:
        self.rec.status = err.status
        self.rec.error_type = err.type
        self.headers.update(err.headers)


class GatewayService:
    def __init__(
        self, *, routes: RouteTable, keys: KeyCache, limiter: Limiter, recorder: MetricsRecorder, telemetry: Telemetry,
        echo_request_id: bool = True,
    ) -> None:
        """``echo_request_id=False`` behind Ray Serve, whose ingress sends the ``x-request-id``
        back itself (:mod:`serve.request_id`): replies then leave it out."""
        self._echo = echo_request_id
        self._routes = routes
        self._router = routes.router
        self._keys = keys
        self._limiter = limiter
        self._recorder = recorder
        self._telemetry = telemetry
        self._created = int(time.time())
        self._settling: set[asyncio.Task] = set()

    # --- endpoints ---------------------------------------------------------------------------

    # ``request_id``: the request's own (:mod:`serve.request_id`), None to make one. It is the
    # metrics row's id and the ``x-request-id`` of the reply; a completion's ``id`` is it with
    # OpenAI's prefix (``chatcmpl-``).

    async def chat_completions(self, authorization: str | None, raw: bytes, request_id: str | None = None) -> Reply:
        return await self._generate(CHAT, authorization, raw, request_id)

    async def completions(self, authorization: str | None, raw: bytes, request_id: str | None = None) -> Reply:
        return await self._generate(TEXT, authorization, raw, request_id)

    async def embeddings(self, authorization: str | None, raw: bytes, request_id: str | None = None) -> Reply:
        track = _Tracker("embeddings", request_id, raw, echo=self._echo)
        try:
            key = await self._keys.authenticate(authorization)
            track.key(key)
            body = parse_body(raw, EmbeddingRequest)
            track.rec.model = body.model
            route = await self._check_model(track, body.model, key)
            await self._admit(track, key, route, sum(len(t) for t in body.texts) // 4 + 1, None)
            _, result = await self._router.embed(route, body.texts, track.outcome)
            track.routed()
            track.first_token()
            track.tokens(result.prompt_tokens, 0)
            vectors = _shorten(result.vectors, body.dimensions)
            out = wire.embeddings(body.model, vectors, body.encoding_format, result.prompt_tokens)
            return self._reply(track, 200, out)
        except GatewayError as err:
            return self._error_reply(track, err)
        except Exception:
            return self._internal_error(track)
        finally:
            self._finish(track)

    async def refuse(
        self, endpoint: str, authorization: str | None, err: GatewayError, request_id: str | None = None
    ) -> Reply:
        """A request refused before its body was read (too large): still one metrics row."""
        track = _Tracker(endpoint, request_id, None, echo=self._echo)
        try:
            track.key(await self._keys.authenticate(authorization))
        except GatewayError as auth_err:
            err = auth_err
        try:
            return self._error_reply(track, err)
        finally:
            self._finish(track)

    async def models(self, authorization: str | None) -> Reply:
        try:
            key = await self._keys.authenticate(authorization)
        except GatewayError as err:
            return Reply(err.status, body=err.json(), headers=err.headers)
        names = [m for m in self._router.routes if key.models is None or m in key.models]
        return Reply(200, body=wire.model_list(names, self._created))

    async def metrics(self) -> Reply:
        """This replica's gateway metrics, then each local runtime's engine metrics (vLLM's)."""
        slots = (s for r in self._router.routes.values() for rank in r.ranks for s in rank)
        runtimes = {s.provider.runtime: s.provider for s in slots if hasattr(s.provider, "engine_metrics")}
        sources = [p.engine_metrics() for p in runtimes.values()]
        parts = [self._telemetry.render(), *await asyncio.gather(*sources)]
        return Reply(200, body=b"".join(parts), headers={"content-type": self._telemetry.content_type})

    # --- generation ------------------------------------------------------------------------

    async def _generate(self, kind: _Kind, authorization: str | None, raw: bytes, request_id: str | None) -> Reply:
        track = _Tracker(kind.endpoint, request_id, raw, echo=self._echo)
        completion_id = kind.id_prefix + track.rec.request_id
        streaming = False
        try:
            key = await self._keys.authenticate(authorization)
            track.key(key)
            body = parse_body(raw, kind.body)
            track.rec.model = body.model
            route = await self._check_model(track, body.model, key)
            track.rec.streamed = bool(body.stream)
            await self._admit(track, key, route, body.prompt_estimate(), body.token_limit)
            request = body.generate_request(completion_id)
            if body.stream:
                opened = await self._router.open_stream(route, request, track.outcome)
                track.routed()
                track.first_token()
                writer = kind.chunks(
                    rid=completion_id, created=int(time.time()), model=body.model,
                    include_usage=body.include_usage,
                )  # fmt: skip
                track.headers["x-foundry-overhead-ms"] = f"{track.overhead_ms():.2f}"
                streaming = True
                return Reply(200, stream=self._stream(track, writer, opened), headers=track.headers)
            _, whole = await self._router.complete(route, request, track.outcome)
            track.routed()
            track.first_token()
            track.tokens(whole.prompt_tokens, whole.completion_tokens)
            out = kind.completion(
                completion_id, int(time.time()), body.model, whole.text, whole.finish_reason,
                whole.prompt_tokens, whole.completion_tokens,
            )  # fmt: skip
            return self._reply(track, 200, out)
        except GatewayError as err:
            track.routed()
            return self._error_reply(track, err)
        except Exception:
            return self._internal_error(track)
        finally:
            if not streaming:
                self._finish(track)

    async def _stream(self, track: _Tracker, writer: wire.ChunkWriter, opened: Opened) -> AsyncIterator[bytes]:
        last = opened.first
        try:
            opening = writer.first()
            if opening:
                yield opening
            if last.text or last.finish_reason:
                yield writer.delta(last.text, last.finish_reason)
            async for delta in opened.rest:
                last = delta
                if delta.text or delta.finish_reason:
                    yield writer.delta(delta.text, delta.finish_reason)
            track.tokens(last.prompt_tokens, last.completion_tokens)
            tail = writer.usage(last.prompt_tokens, last.completion_tokens)
            if tail:
                yield tail
            yield wire.DONE
        except (GatewayError, ProviderError) as exc:
            # Bytes already went out: nothing can be retried. One error event, then close.
            err = exc if isinstance(exc, GatewayError) else from_provider_error(exc)
            track.fail(err)
            track.tokens(last.prompt_tokens, last.completion_tokens)
            yield wire.sse_error(err)
        except Exception:
            log.exception("stream %s failed", track.rec.request_id)
            err = GatewayError(f"Internal error while streaming (request id {track.rec.request_id}).")
            track.fail(err)
            yield wire.sse_error(err)
        finally:
            if track.rec.status == 200 and last.finish_reason is None:
                track.rec.status = 499  # the client went away before the end
                track.rec.error_type = "client_disconnected"
                track.tokens(last.prompt_tokens, last.completion_tokens)
            await opened.rest.aclose()
            self._finish(track)

    # --- helpers -----------------------------------------------------------------------------

    async def _check_model(self, track: _Tracker, model: str, key: ApiKeyInfo) -> ModelRoute:
        """The model's route (the one dict lookup of the request path), kept on ``track``; an
        unknown name refreshes the routes once (just registered?), then 404."""
        route = self._router.routes.get(model)
        if route is None:
            route = await self._routes.find(model)
        track.route = route
        if key.models is not None and model not in key.models:
            raise PermissionDenied(f"This API key may not use the model '{model}'.", param="model")
        return route

    async def _admit(
        self, track: _Tracker, key: ApiKeyInfo, route: ModelRoute, prompt_estimate: int, max_tokens: int | None
    ) -> None:
        """Reserve the request against the key's rate limits and budgets (429 when over)."""
        cost_estimate = prompt_estimate * route.config.pricing.input_per_1m / 1e6
        track.ticket = await self._limiter.admit(
            key, route.name, prompt_estimate, max_tokens or 0, cost_estimate_usd=cost_estimate
        )
        track.headers.update(track.ticket.headers)

    def _settle(self, track: _Tracker) -> None:
        """Charge actual usage to the limits, off the response path."""
        ticket = track.ticket
        if ticket is None or not ticket.checks:
            return
        rec = track.rec
        task = asyncio.get_running_loop().create_task(
            self._limiter.settle(ticket, rec.prompt_tokens, rec.completion_tokens, rec.cost_usd)
        )
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def drain(self) -> None:
        """Wait for pending settlements (shutdown)."""
        if self._settling:
            await asyncio.wait(self._settling, timeout=10)

    def _reply(self, track: _Tracker, status: int, body: bytes) -> Reply:
        track.headers["x-foundry-overhead-ms"] = f"{track.overhead_ms():.2f}"
        return Reply(status, body=body, headers=track.headers)

    def _error_reply(self, track: _Tracker, err: GatewayError) -> Reply:
        track.fail(err)
        return Reply(err.status, body=err.json(), headers=track.headers)

    def _internal_error(self, track: _Tracker) -> Reply:
        log.exception("request %s failed", track.rec.request_id)
        err = GatewayError(f"The server had an error processing the request (request id {track.rec.request_id}).")
        return self._error_reply(track, err)

    def _finish(self, track: _Tracker) -> None:
        rec = track.rec
        if not rec.model and track.raw:
            rec.model = model_name_hint(track.raw)  # parsed again only for rejected requests
        rec.latency_ms = (time.perf_counter() - track.t0) * 1000
        pricing = track.outcome.pricing or (track.route.config.pricing if track.route is not None else None)
        if pricing is not None:
            rec.cost_usd = (rec.prompt_tokens * pricing.input_per_1m + rec.completion_tokens * pricing.output_per_1m) / 1e6
        self._settle(track)
        self._recorder.record(rec)
        self._telemetry.observe(
            model=rec.model if track.route is not None or rec.model in self._router.routes else "unknown",
            provider=rec.provider or "none",
            status=rec.status,
            latency_s=rec.latency_ms / 1000,
            ttft_s=None if rec.ttft_ms is None else rec.ttft_ms / 1000,
            overhead_s=track.overhead_ms() / 1000,
            prompt_tokens=rec.prompt_tokens,
            completion_tokens=rec.completion_tokens,
            project=rec.project_id or "",
            cost_usd=rec.cost_usd,
        )


def _shorten(vectors: list[list[float]], dimensions: int | None) -> list[list[float]]:
    """OpenAI's ``dimensions``: the first ``dimensions`` components, scaled back to unit length
    (how text-embedding-3 vectors are shortened). More than the model has is a 400."""
    native = len(vectors[0])
    if dimensions is None or dimensions == native:
        return vectors
    if dimensions > native:
        raise InvalidRequest(
            f"This model returns {native}-dimensional embeddings; 'dimensions' must be at most {native}.",
            param="dimensions",
            code="invalid_dimensions",
        )
    shortened = []
    for vector in vectors:
        head = vector[:dimensions]
        norm = math.sqrt(sum(x * x for x in head)) or 1.0
        shortened.append([x / norm for x in head])
    return shortened


