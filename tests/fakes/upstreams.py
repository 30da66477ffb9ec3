"""Small, seeded servers that speak the upstream providers' wire protocols, with fault switches.

    OpenAIUpstream     POST /v1/chat/completions, /v1/completions, /v1/embeddings
                       (``Authorization: Bearer`` checked when ``api_key`` is given); url ends in /v1
    AzureUpstream      POST /openai/deployments/{deployment}/{chat/completions,completions,embeddings}
                       ?api-version=...  with ``api-key``; 401 on a wrong key, 404 on an unknown
                       deployment, path or api-version
    AnthropicUpstream  POST /v1/messages with ``x-api-key`` and ``anthropic-version``; the
                       streaming events message_start ... message_stop

Each is a raw ASGI app served by uvicorn (httptools, uvloop) in a daemon thread on 127.0.0.1: a
free port, or ``port=`` so that a stopped upstream comes back where it was. Handlers are lean
(no framework, orjson) so that a benchmark can drive thousands of requests per second; with
``record=False`` nothing is kept per request.

Answers are deterministic: ``tokens`` words drawn by a RNG seeded with ``(seed, prompt text)``,
cut by ``max_tokens`` ("length") or a stop sequence ("stop"); one stream chunk per word. Usage
counts words. :meth:`FakeUpstream.reply` tells a test what the answer to a prompt will be.

Faults (thread-safe; each applies to the next ``count`` requests that reach it)::

    upstream.fail_next(2, status=429, retry_after_s=1)  # HTTP error in the protocol's error shape
    upstream.delay_next(1, seconds=5)                    # wait before the first byte
    upstream.stall_next(1, seconds=30, after_chunks=1)   # streams: go quiet mid-stream
    upstream.drop_next(1, after_chunks=2)                # streams: close the connection mid-stream
    upstream.error_next(1, after_chunks=1)               # streams: an error event, then the end
    upstream.latency_s = 0.005                           # every request: wait before answering
    upstream.stop()                                      # kill: refuse new connections, abort open ones

Observations: ``requests`` (a :class:`RecordedRequest` per request), ``request_count``,
``active``, ``statuses``, ``connections_seen`` (the client addresses: one per TCP connection),
``streams_completed``, ``disconnects`` (clients that left before the
end of their answer, noticed during delays, stalls and paced streams), and
``await upstream.wait_until(lambda: upstream.disconnects == 1)``.

Example::

    with OpenAIUpstream(seed=1, latency_s=0.005) as upstream:
        httpx.post(f"{upstream.url}/chat/completions", json={...})

From a shell (for benchmarks against other gateways)::

    python -m tests.fakes.upstreams openai --port 9001 --latency-ms 5
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import math
import random
import re
import signal
import socket
import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import parse_qsl

import orjson
import uvicorn

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 15.0

WORDS = tuple(
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
    "quebec romeo sierra tango uniform victor whiskey xray yankee zulu amber bronze cobalt denim ember "
    "flint granite harbor iris jade kelp lumen maple nectar onyx pearl quartz river slate timber umber "
    "velvet willow yarrow zephyr".split()
)


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names in lower case
    json: Any


@dataclass(frozen=True, slots=True)
class Reply:
    """What a fake answers to one prompt."""

    chunks: tuple[str, ...]  # one per stream chunk (a word, with its leading space)
    ended_by: str  # "eos", "max_tokens" or "stop_sequence"
    stop_sequence: str | None
    prompt_tokens: int

    @property
    def text(self) -> str:
        return "".join(self.chunks)


@dataclass(slots=True)
class _Fault:
    remaining: int
    status: int = 0
    seconds: float = 0.0
    after_chunks: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    message: str | None = None
    error_type: str | None = None


class _Exchange:
    """One request: what came in, how to answer, and whether the client is still there."""

    __slots__ = ("method", "path", "query", "headers", "json", "receive", "send", "_watcher")

    def __init__(self, scope: dict[str, Any], body: Any, receive: Callable, send: Callable) -> None:
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.query = dict(parse_qsl(scope["query_string"].decode("latin-1")))
        self.headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        self.json = body
        self.receive = receive
        self.send = send
        self._watcher: asyncio.Task | None = None

    def gone(self) -> bool:
        return self._watcher is not None and self._watcher.done()

    async def pause(self, seconds: float) -> bool:
        """Wait ``seconds``; True if the client disconnected meanwhile (the wait then ends)."""
        if self._watcher is None:
            self._watcher = asyncio.ensure_future(self._wait_disconnect())
        await asyncio.wait({self._watcher}, timeout=seconds)
        return self._watcher.done()

    async def _wait_disconnect(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass

    def close(self) -> None:
        if self._watcher is not None and not self._watcher.done():
            self._watcher.cancel()


class FakeUpstream:
    """The server, faults and observations shared by the protocol fakes."""

    url_suffix = ""

    def __init__(
        self,
        *,
        seed: int = 0,
        tokens: int = 8,
        latency_s: float = 0.0,
        chunk_interval_s: float = 0.0,
        api_key: str | None = None,
        port: int = 0,
        record: bool = True,
        dimensions: int = 8,
    ) -> None:
        self.seed = seed
        self.tokens = tokens
        self.latency_s = latency_s
        self.chunk_interval_s = chunk_interval_s
        self.api_key = api_key
        self.port = port
        self.record = record
        self.dimensions = dimensions
        self._settings = (tokens, latency_s, chunk_interval_s)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._server: uvicorn.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clear()

    def _clear(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.connections_seen: set[tuple[str, int]] = set()  # client (host, port) of each request
        self.request_count = 0
        self.active = 0
        self.statuses: Counter[int] = Counter()
        self.streams_completed = 0
        self.disconnects = 0
        self._failure: _Fault | None = None
        self._delay: _Fault | None = None
        self._stream_fault: tuple[str, _Fault] | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.url_suffix}"

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError(f"{type(self).__name__} is already running at {self.url}")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self,
            interface="asgi3",
            http="httptools",
            ws="none",
            lifespan="off",
            log_config=None,
            log_level="warning",
            access_log=False,
            backlog=2048,
            timeout_keep_alive=60,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=self._run, args=(server, sock), name=f"fake-{type(self).__name__}-{self.port}", daemon=True
        )
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self._thread = None
                sock.close()
                raise RuntimeError(f"{type(self).__name__} did not start on port {self.port}")
            time.sleep(0.002)  # polling a condition, bounded by the deadline above
        return self

    def stop(self) -> None:
        """Stop as a killed process would: new connections are refused and open ones (streams
        mid-way included) are aborted. ``start()`` brings the upstream back on the same port."""
        thread, server, loop = self._thread, self._server, self._loop
        if thread is None or server is None:
            return
        if thread.is_alive() and loop is not None:
            try:
                loop.call_soon_threadsafe(_abort, server)
            except RuntimeError:  # the loop closed in the meantime
                pass
        thread.join(STOP_TIMEOUT_S)
        if thread.is_alive():
            raise RuntimeError(f"{type(self).__name__} on port {self.port} did not stop")
        self._thread = self._server = self._loop = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self, server: uvicorn.Server, sock: socket.socket) -> None:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            self._loop = runner.get_loop()
            runner.run(server.serve(sockets=[sock]))

    # --- faults ---------------------------------------------------------------------------------

    def fail_next(
        self,
        count: int = 1,
        status: int = 500,
        *,
        retry_after_s: float | None = None,
        headers: dict[str, str] | None = None,
        message: str | None = None,
    ) -> None:
        """Answer the next ``count`` requests with ``status`` and the protocol's error body."""
        extra = dict(headers or {})
        if retry_after_s is not None:
            extra["retry-after"] = f"{retry_after_s:g}"
        with self._lock:
            self._failure = _Fault(count, status=status, headers=extra, message=message)

    def delay_next(self, count: int = 1, *, seconds: float) -> None:
        """Wait ``seconds`` before the first byte of the next ``count`` answers."""
        with self._lock:
            self._delay = _Fault(count, seconds=seconds)

    def stall_next(self, count: int = 1, *, seconds: float, after_chunks: int = 1) -> None:
        """Streams: stop sending for ``seconds`` after ``after_chunks`` content chunks."""
        with self._lock:
            self._stream_fault = ("stall", _Fault(count, seconds=seconds, after_chunks=after_chunks))

    def drop_next(self, count: int = 1, *, after_chunks: int = 1) -> None:
        """Streams: close the connection after ``after_chunks`` content chunks, mid-response."""
        with self._lock:
            self._stream_fault = ("drop", _Fault(count, after_chunks=after_chunks))

    def error_next(self, count: int = 1, *, after_chunks: int = 1, error_type: str | None = None) -> None:
        """Streams: send the protocol's in-stream error event after ``after_chunks`` chunks, then end."""
        with self._lock:
            self._stream_fault = ("error", _Fault(count, after_chunks=after_chunks, error_type=error_type))

    def reset(self) -> None:
        """Forget faults, counters and recorded requests; restore the constructor's settings."""
        with self._lock:
            self.tokens, self.latency_s, self.chunk_interval_s = self._settings
            self._clear()

    async def wait_until(self, predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
        """Poll ``predicate`` (every 5 ms) until it holds; AssertionError after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout_s} s")
            await asyncio.sleep(0.005)

    def _take(self, name: str) -> Any:
        if getattr(self, name) is None:  # the common case, without the lock
            return None
        with self._lock:
            taken = getattr(self, name)
            if taken is None:
                return None
            fault = taken[1] if isinstance(taken, tuple) else taken
            fault.remaining -= 1
            if fault.remaining <= 0:
                setattr(self, name, None)
            return taken

    # --- answers --------------------------------------------------------------------------------

    def reply(self, prompt_text: str, *, max_tokens: int | None = None, stop: Sequence[str] = ()) -> Reply:
        """The answer to ``prompt_text``: the same for the same seed, in every fake."""
        rng = random.Random(f"{self.seed}\0{prompt_text}")
        words = [rng.choice(WORDS) for _ in range(self.tokens)]
        chunks = [word if i == 0 else " " + word for i, word in enumerate(words)]
        ended_by, matched = "eos", None
        if max_tokens is not None and max_tokens < len(chunks):
            chunks, ended_by = chunks[:max_tokens], "max_tokens"
        text = "".join(chunks)
        hits = [(text.find(s), s) for s in stop if s and s in text]
        if hits:
            cut, matched = min(hits)
            ended_by, kept, length = "stop_sequence", [], 0
            for chunk in chunks:
                if length + len(chunk) >= cut:
                    if cut > length:
                        kept.append(chunk[: cut - length])
                    break
                kept.append(chunk)
                length += len(chunk)
            chunks = kept
        return Reply(tuple(chunks), ended_by, matched, max(1, len(prompt_text.split())))

    def embedding(self, text: str) -> list[float]:
        rng = random.Random(f"{self.seed}\0embed\0{text}")
        vector = [rng.gauss(0.0, 1.0) for _ in range(self.dimensions)]
        norm = math.sqrt(sum(x * x for x in vector)) or 1.0
        return [x / norm for x in vector]

    # --- ASGI -----------------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.request_count += 1
        self.active += 1
        self.connections_seen.add(scope["client"])
        try:
            try:
                payload = orjson.loads(body) if body else None
            except orjson.JSONDecodeError:
                payload = None
            exchange = _Exchange(scope, payload, receive, send)
            if self.record:
                self.requests.append(
                    RecordedRequest(exchange.method, exchange.path, exchange.query, exchange.headers, payload)
                )
            try:
                await self._answer(exchange, body)
            finally:
                exchange.close()
        finally:
            self.active -= 1

    async def _answer(self, exchange: _Exchange, body: bytes) -> None:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        delay = self._take("_delay")
        if delay is not None and await exchange.pause(delay.seconds):
            self.disconnects += 1
            return
        failure = self._take("_failure")
        if failure is not None:
            message = failure.message or f"fake upstream failure (HTTP {failure.status})"
            await self.send_json(exchange, failure.status, self.error_body(failure.status, message), failure.headers)
            return
        if body and exchange.json is None:
            await self.send_json(exchange, 400, self.error_body(400, "the body is not valid JSON"))
            return
        await self.handle(exchange)

    async def handle(self, exchange: _Exchange) -> None:
        raise NotImplementedError

    def error_body(self, status: int, message: str, error_type: str | None = None) -> dict[str, Any]:
        raise NotImplementedError

    def error_frame(self, error_type: str | None) -> bytes:
        raise NotImplementedError

    async def send_json(
        self, exchange: _Exchange, status: int, obj: Any, headers: dict[str, str] | None = None
    ) -> None:
        body = orjson.dumps(obj)
        raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        raw_headers += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
        await exchange.send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await exchange.send({"type": "http.response.body", "body": body})
        self.statuses[status] += 1

    async def send_stream(self, exchange: _Exchange, frames: Sequence[tuple[bytes, bool]]) -> None:
        """Send server-sent event ``frames`` ((bytes, is_content_chunk)); faults apply here."""
        await exchange.send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")],
            }
        )
        self.statuses[200] += 1
        taken = self._take("_stream_fault")
        if taken is None and not self.chunk_interval_s:
            await exchange.send({"type": "http.response.body", "body": b"".join(f for f, _ in frames)})
            self.streams_completed += 1
            return
        kind, fault = taken if taken is not None else (None, None)
        sent = 0
        for frame, is_content in frames:
            if fault is not None and sent == fault.after_chunks:
                if kind == "drop":
                    return  # uvicorn closes a connection whose app left a response unfinished
                if kind == "error":
                    await exchange.send({"type": "http.response.body", "body": self.error_frame(fault.error_type)})
                    await exchange.send({"type": "http.response.body", "body": b""})
                    return
                if await exchange.pause(fault.seconds):
                    self.disconnects += 1
                    return
                fault = None
            if sent and is_content and self.chunk_interval_s and await exchange.pause(self.chunk_interval_s):
                self.disconnects += 1
                return
            await exchange.send({"type": "http.response.body", "body": frame, "more_body": True})
            sent += is_content
        await exchange.send({"type": "http.response.body", "body": b""})
        self.streams_completed += 1


class OpenAIUpstream(FakeUpstream):
    """OpenAI's chat completions, completions and embeddings; ``url`` is the ``/v1`` base URL."""

    url_suffix = "/v1"
    model_required = True

    async def handle(self, exchange: _Exchange) -> None:
        if self.api_key is not None and exchange.headers.get("authorization") != f"Bearer {self.api_key}":
            given = exchange.headers.get("authorization", "").removeprefix("Bearer ")
            masked = f"{given[:3]}{'*' * 12}{given[-4:]}" if given else "(none)"
            body = self.error_body(401, f"Incorrect API key provided: {masked}.", "invalid_request_error")
            body["error"]["code"] = "invalid_api_key"
            await self.send_json(exchange, 401, body)
            return
        operation = {
            "/v1/chat/completions": "chat",
            "/v1/completions": "completions",
            "/v1/embeddings": "embeddings",
        }.get(exchange.path)
        if operation is None or exchange.method != "POST":
            await self.send_json(
                exchange, 404, self.error_body(404, f"Unknown request URL: {exchange.method} {exchange.path}.")
            )
            return
        await self.serve_openai(exchange, operation, model=None)

    async def serve_openai(self, exchange: _Exchange, operation: str, *, model: str | None) -> None:
        body = exchange.json
        problem = _openai_problem(body, operation, model_required=model is None and self.model_required)
        if problem is not None:
            await self.send_json(exchange, 400, self.error_body(400, problem, "invalid_request_error"))
            return
        model = model or body.get("model") or "fake-model"
        if operation == "embeddings":
            await self._embeddings(exchange, body, model)
            return
        chat = operation == "chat"
        prompt = _chat_text(body["messages"]) if chat else str(body["prompt"])
        stop = body.get("stop") or ()
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
        reply = self.reply(prompt, max_tokens=max_tokens, stop=[stop] if isinstance(stop, str) else stop)
        finish = "length" if reply.ended_by == "max_tokens" else "stop"
        usage = {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": len(reply.chunks),
            "total_tokens": reply.prompt_tokens + len(reply.chunks),
        }
        ident = f"{'chatcmpl' if chat else 'cmpl'}-{self.request_count}"
        head: dict[str, Any] = {"id": ident, "object": "", "created": int(time.time()), "model": model}
        if not body.get("stream"):
            head["object"] = "chat.completion" if chat else "text_completion"
            if chat:
                choice = {"index": 0, "message": {"role": "assistant", "content": reply.text}}
            else:
                choice = {"index": 0, "text": reply.text}
            choice |= {"logprobs": None, "finish_reason": finish}
            await self.send_json(exchange, 200, {**head, "choices": [choice], "usage": usage})
            return
        head["object"] = "chat.completion.chunk" if chat else "text_completion"
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if include_usage:
            head["usage"] = None

        def frame(content: dict[str, Any], finish_reason: str | None = None) -> bytes:
            choice = {"index": 0, **content, "logprobs": None, "finish_reason": finish_reason}
            return b"data: " + orjson.dumps({**head, "choices": [choice]}) + b"\n\n"

        def piece(text: str | None) -> dict[str, Any]:
            if not chat:
                return {"text": text or ""}
            return {"delta": {} if text is None else {"content": text}}

        frames: list[tuple[bytes, bool]] = []
        if chat:
            frames.append((frame({"delta": {"role": "assistant", "content": ""}}), False))
        frames += [(frame(piece(chunk)), True) for chunk in reply.chunks]
        frames.append((frame(piece(None), finish), False))
        if include_usage:
            frames.append((b"data: " + orjson.dumps({**head, "choices": [], "usage": usage}) + b"\n\n", False))
        frames.append((b"data: [DONE]\n\n", False))
        await self.send_stream(exchange, frames)

    async def _embeddings(self, exchange: _Exchange, body: dict[str, Any], model: str) -> None:
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(inputs):
            vector: Any = self.embedding(str(text))
            if as_base64:
                vector = base64.b64encode(array("f", vector).tobytes()).decode()
            data.append({"object": "embedding", "index": index, "embedding": vector})
        tokens = sum(max(1, len(str(text).split())) for text in inputs)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        await self.send_json(exchange, 200, {"object": "list", "data": data, "model": model, "usage": usage})

    def error_body(self, status: int, message: str, error_type: str | None = None) -> dict[str, Any]:
        if error_type is None:
            error_type = {429: "requests", 401: "invalid_request_error"}.get(
                status, "server_error" if status >= 500 else "invalid_request_error"
            )
        code = {429: "rate_limit_exceeded", 404: "not_found"}.get(status)
        return {"error": {"message": message, "type": error_type, "param": None, "code": code}}

    def error_frame(self, error_type: str | None) -> bytes:
        error = {"message": "fake upstream failure mid-stream", "type": error_type or "server_error", "code": 500}
        return b"data: " + orjson.dumps({"error": error}) + b"\n\n"


class AzureUpstream(OpenAIUpstream):
    """Azure OpenAI's addressing over OpenAI's bodies; ``url`` is the endpoint (no path)."""

    url_suffix = ""
    _PATH = re.compile(r"/openai/deployments/([^/]+)/(chat/completions|completions|embeddings)")

    def __init__(
        self,
        *,
        deployments: Sequence[str] = ("gpt-4o-mini",),
        api_versions: Sequence[str] = ("2024-10-21",),
        api_key: str = "azure-test-key",
        **kwargs: Any,
    ) -> None:
        super().__init__(api_key=api_key, **kwargs)
        self.deployments = set(deployments)
        self.api_versions = set(api_versions)

    async def handle(self, exchange: _Exchange) -> None:
        if exchange.headers.get("api-key") != self.api_key:
            message = (
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a "
                "valid key for an active subscription and use a correct regional API endpoint for your resource."
            )
            await self.send_json(exchange, 401, {"error": {"code": "401", "message": message}})
            return
        match = self._PATH.fullmatch(exchange.path)
        if match is None or exchange.method != "POST" or exchange.query.get("api-version") not in self.api_versions:
            await self.send_json(exchange, 404, {"error": {"code": "404", "message": "Resource not found"}})
            return
        deployment, operation = match.group(1), match.group(2)
        if deployment not in self.deployments:
            message = (
                "The API deployment for this resource does not exist. If you created the deployment within the "
                "last 5 minutes, please wait a moment and try again."
            )
            await self.send_json(exchange, 404, {"error": {"code": "DeploymentNotFound", "message": message}})
            return
        await self.serve_openai(exchange, "chat" if operation == "chat/completions" else operation, model=deployment)


class AnthropicUpstream(FakeUpstream):
    """Anthropic's Messages API (``/v1/messages``); ``url`` is the API root."""

    STOP_REASONS = {"eos": "end_turn", "max_tokens": "max_tokens", "stop_sequence": "stop_sequence"}
    ERROR_TYPES = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        500: "api_error",
        529: "overloaded_error",
    }

    async def handle(self, exchange: _Exchange) -> None:
        if exchange.path != "/v1/messages" or exchange.method != "POST":
            await self.send_json(exchange, 404, self.error_body(404, "Not found"))
            return
        if self.api_key is not None and exchange.headers.get("x-api-key") != self.api_key:
            await self.send_json(exchange, 401, self.error_body(401, "invalid x-api-key"))
            return
        if not exchange.headers.get("anthropic-version"):
            await self.send_json(exchange, 400, self.error_body(400, "anthropic-version: header is required"))
            return
        body = exchange.json
        problem = _anthropic_problem(body)
        if problem is not None:
            await self.send_json(exchange, 400, self.error_body(400, problem))
            return
        system = body.get("system") or ""
        if isinstance(system, list):
            system = "\n".join(block.get("text", "") for block in system)
        prompt = "\n".join([f"system: {system}"] * bool(system) + [_chat_line(m) for m in body["messages"]])
        reply = self.reply(prompt, max_tokens=body["max_tokens"], stop=body.get("stop_sequences") or ())
        stop_reason = self.STOP_REASONS[reply.ended_by]
        message = {
            "id": f"msg_{self.request_count:024d}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [{"type": "text", "text": reply.text}],
            "stop_reason": stop_reason,
            "stop_sequence": reply.stop_sequence,
            "usage": {"input_tokens": reply.prompt_tokens, "output_tokens": len(reply.chunks)},
        }
        if not body.get("stream"):
            await self.send_json(exchange, 200, message)
            return
        start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
        start["usage"] = {"input_tokens": reply.prompt_tokens, "output_tokens": 1}
        frames = [
            (_event({"type": "message_start", "message": start}), False),
            (_event({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}), False),
            (_event({"type": "ping"}), False),
        ]
        frames += [
            (_event({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": c}}), True)
            for c in reply.chunks
        ]
        end = {"stop_reason": stop_reason, "stop_sequence": reply.stop_sequence}
        frames += [
            (_event({"type": "content_block_stop", "index": 0}), False),
            (_event({"type": "message_delta", "delta": end, "usage": {"output_tokens": len(reply.chunks)}}), False),
            (_event({"type": "message_stop"}), False),
        ]
        await self.send_stream(exchange, frames)

    def error_body(self, status: int, message: str, error_type: str | None = None) -> dict[str, Any]:
        default = "api_error" if status >= 500 else "invalid_request_error"
        error_type = error_type or self.ERROR_TYPES.get(status, default)
        return {"type": "error", "error": {"type": error_type, "message": message}}

    def error_frame(self, error_type: str | None) -> bytes:
        return _event(self.error_body(529, "Overloaded", error_type or "overloaded_error"))


# --- protocol details -----------------------------------------------------------------------------


def _openai_problem(body: Any, operation: str, *, model_required: bool) -> str | None:
    """What OpenAI would answer 400 for, in its words; None if the body is acceptable."""
    if not isinstance(body, dict):
        return "We could not parse the JSON body of your request."
    if model_required and not isinstance(body.get("model"), str):
        return "you must provide a model parameter"
    if operation == "embeddings":
        return None if body.get("input") else "'input' is a required property"
    if operation == "chat" and (not isinstance(body.get("messages"), list) or not body["messages"]):
        return "'messages' must contain at least one message"
    if operation == "completions" and "prompt" not in body:
        return "'prompt' is a required property"
    if body.get("stream_options") is not None and not body.get("stream"):
        return "The 'stream_options' parameter is only allowed when 'stream' is enabled."
    stop = body.get("stop")
    if isinstance(stop, list) and len(stop) > 4:
        return f"{stop!r} is too long - 'stop'"
    if not 0 <= body.get("temperature", 1) <= 2:
        return "temperature must be between 0 and 2"
    return None


def _anthropic_problem(body: Any) -> str | None:
    """What Anthropic would answer 400 for, in its words; None if the body is acceptable."""
    if not isinstance(body, dict):
        return "Request body must be a JSON object"
    if not isinstance(body.get("model"), str):
        return "model: Field required"
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        return "max_tokens: Field required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            return (
                f'messages.{i}.role: Unexpected role "{role}". The Messages API accepts a top-level `system` '
                "parameter, not \"system\" as an input message role."
            )
        if not message.get("content"):
            return f"messages.{i}: all messages must have non-empty content"
    if not 0 <= body.get("temperature", 1) <= 1:
        return "temperature: Input should be less than or equal to 1"
    if "seed" in body or "stop" in body:
        return f"{'seed' if 'seed' in body else 'stop'}: Extra inputs are not permitted"
    return None


def _chat_text(messages: list[dict[str, Any]]) -> str:
    return "\n".join(_chat_line(m) for m in messages)


def _chat_line(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):  # content parts
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return f"{message.get('role')}: {content}"


def _event(data: dict[str, Any]) -> bytes:
    """An Anthropic event: its ``type`` is also the SSE event name."""
    return b"event: " + data["type"].encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _abort(server: uvicorn.Server) -> None:
    """Runs on the server's loop: what a SIGKILL would do to the process's sockets."""
    for listener in getattr(server, "servers", []):
        listener.close()
    for connection in list(server.server_state.connections):
        transport = getattr(connection, "transport", None)
        if transport is not None:
            transport.abort()
    server.should_exit = True
    server.force_exit = True


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.upstreams", description=__doc__.split("\n")[0])
    parser.add_argument("protocol", choices=["openai", "azure", "anthropic"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokens", type=int, default=8, help="words per answer")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="wait before each answer")
    parser.add_argument("--chunk-interval-ms", type=float, default=0.0, help="wait between stream chunks")
    parser.add_argument("--api-key", default=None, help="require this key (Azure: default azure-test-key)")
    parser.add_argument("--record", action="store_true", help="keep every request in memory")
    args = parser.parse_args(argv)
    options: dict[str, Any] = dict(
        seed=args.seed,
        tokens=args.tokens,
        latency_s=args.latency_ms / 1000,
        chunk_interval_s=args.chunk_interval_ms / 1000,
        port=args.port,
        record=args.record,
    )
    if args.api_key is not None or args.protocol != "azure":
        options["api_key"] = args.api_key
    kinds: dict[str, type[FakeUpstream]] = {"openai": OpenAIUpstream, "azure": AzureUpstream, "anthropic": AnthropicUpstream}
    upstream = kinds[args.protocol](**options)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    with upstream:
        print(f"{args.protocol} upstream at {upstream.url}", flush=True)
        try:
            done.wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
