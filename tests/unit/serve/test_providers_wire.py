"""What the outside providers send and how they read answers, one translation rule at a time.

Each test states its upstream's answer as an ``httpx.Response`` (one line); :class:`Upstream`
serves it over real HTTP on a local port, so the providers' own aiohttp client is what runs.
The contract suite (tests/integration/serve/test_providers_contract.py) runs the same providers
against the full protocol fakes.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone
from typing import Any

import aiohttp
import httpx
import orjson
import pytest

from serve.config import AnthropicProvider, AzureProvider, OpenAIProvider, TogetherProvider
from serve.providers._http import UpstreamClient, retry_after_s
from serve.providers.anthropic import AnthropicMessagesProvider, EmbeddingsUnsupported, to_anthropic_messages
from serve.providers.azure import AzureOpenAIProvider
from serve.gateway.errors import from_provider_error
from serve.providers.errors import (
    UnsupportedParameter,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamStatus,
    UpstreamTimeout,
)
from serve.providers.openai_compat import OpenAICompatibleProvider
from serve.runtimes.engine import ChatMessage, GenerateRequest, SamplingParams, TokenDelta
from tests.fakes.upstreams import FakeUpstream

KEY = "sk-unit-0123456789abcdefSECRET"
CHAT = (ChatMessage("user", "hello there"),)
_RUNNING: list[Upstream] = []


class Upstream(FakeUpstream):
    """A local HTTP server answering every request with ``respond(request)``: the request as an
    ``httpx.Request`` (kept in ``requests``), the answer as an ``httpx.Response``. A streamed
    answer whose pieces raise drops the connection there, as a peer that resets it does."""

    def __init__(self, respond: Callable[[httpx.Request], httpx.Response]) -> None:
        super().__init__()
        self.respond = respond
        self.start()
        _RUNNING.append(self)
        self.requests: list[httpx.Request] = []

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        query = scope["query_string"].decode()
        url = f"http://127.0.0.1:{self.port}{scope['raw_path'].decode()}" + (f"?{query}" if query else "")
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        request = httpx.Request(scope["method"], url, headers=headers, content=bytes(body))
        self.requests.append(request)
        response = self.respond(request)
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.multi_items()]
        await send({"type": "http.response.start", "status": response.status_code, "headers": raw})
        try:
            whole = response.content
        except httpx.ResponseNotRead:  # a streamed answer
            async for piece in response.aiter_raw():  # raising here: uvicorn drops the connection
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            whole = b""
        await send({"type": "http.response.body", "body": whole, "more_body": False})

    def body(self, index: int = -1) -> Any:
        return orjson.loads(self.requests[index].content)


_PROVIDERS: list[Any] = []


def track(provider: Any) -> Any:
    """``provider``, closed at the end of the test (its connections, if it opened any)."""
    _PROVIDERS.append(provider)
    return provider


@pytest.fixture(autouse=True)
async def _cleanup() -> AsyncIterator[None]:
    yield
    while _PROVIDERS:
        await _PROVIDERS.pop().close()
    while _RUNNING:
        _RUNNING.pop().stop()


def sse(*events: Any, done: bool = True) -> bytes:
    frames = [b"data: " + orjson.dumps(e) + b"\n\n" for e in events]
    return b"".join(frames) + (b"data: [DONE]\n\n" if done else b"")


def anthropic_sse(*events: dict[str, Any]) -> bytes:
    return b"".join(b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events)


def streamed(body: bytes, *, split: int = 0, fail_after: int | None = None) -> httpx.Response:
    """A 200 event stream of ``body``, in ``split``-byte pieces; ReadError after ``fail_after`` pieces."""

    async def pieces() -> AsyncIterator[bytes]:
        size = split or len(body)
        for n, start in enumerate(range(0, len(body), size)):
            if fail_after is not None and n == fail_after:
                raise httpx.ReadError("connection reset by peer")
            yield body[start : start + size]

    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=pieces())


def chat_chunk(content: str | None = None, finish: str | None = None, *, usage: dict | None = None) -> dict:
    delta = {} if content is None else {"content": content}
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], "usage": usage}


OPENAI_STREAM = sse(
    {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
    chat_chunk("Hel"),
    chat_chunk("lo"),
    chat_chunk(None, "stop"),
    {"object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2}},
)


def openai(upstream: Upstream, **cfg: Any) -> OpenAICompatibleProvider:
    config = OpenAIProvider(type="openai", base_url=f"{upstream.url}/v1", **cfg)
    return track(OpenAICompatibleProvider.from_config("chat-main", "primary", config, KEY))


def anthropic(upstream: Upstream, **cfg: Any) -> AnthropicMessagesProvider:
    config = AnthropicProvider(type="anthropic", base_url=upstream.url, model="claude-x", **cfg)
    return track(AnthropicMessagesProvider.from_config("chat-small", "claude", config, KEY))


async def collect(provider: Any, request: GenerateRequest) -> list[TokenDelta]:
    return [delta async for delta in provider.generate(request)]


def chat(**params: Any) -> GenerateRequest:
    return GenerateRequest("req-1", SamplingParams(**params), messages=CHAT)


# --- OpenAI-compatible requests --------------------------------------------------------------------


async def test_openai_chat_request_carries_the_key_the_upstream_model_and_every_parameter():
    upstream = Upstream(lambda _: streamed(OPENAI_STREAM))
    provider = openai(upstream, model="upstream-name")
    request = chat(max_tokens=12, temperature=0.0, top_p=0.5, seed=7, stop=("\n\n", "END"))
    deltas = await collect(provider, request)
    sent = upstream.requests[0]
    assert str(sent.url) == f"{upstream.url}/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert upstream.body() == {
        "model": "upstream-name",
        "messages": [{"role": "user", "content": "hello there"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 12,
        "temperature": 0.0,
        "top_p": 0.5,
        "seed": 7,
        "stop": ["\n\n", "END"],
    }
    assert deltas == [
        TokenDelta("Hel", None, 0, 1),
        TokenDelta("lo", None, 0, 2),
        TokenDelta("", "stop", 9, 2),
    ]
    assert provider.name == "openai:primary"
    await provider.close()


async def test_a_prompt_goes_to_completions_without_unset_parameters():
    stream = sse({"choices": [{"index": 0, "text": "ok", "finish_reason": None}]}, {"choices": [{"index": 0, "text": "", "finish_reason": "length"}]})
    upstream = Upstream(lambda _: streamed(stream))
    provider = openai(upstream)
    deltas = await collect(provider, GenerateRequest("r", SamplingParams(max_tokens=1), prompt="Once upon"))
    assert upstream.requests[0].url.path == "/v1/completions"
    body = upstream.body()
    assert body["prompt"] == "Once upon" and body["model"] == "chat-main"  # the model's table name
    assert "seed" not in body and "stop" not in body and "messages" not in body
    # no usage from this server: completion tokens are the content chunks
    assert deltas == [TokenDelta("ok", None, 0, 1), TokenDelta("", "length", 0, 1)]


async def test_together_is_the_openai_protocol_at_togethers_address():
    config = TogetherProvider(type="together", model="meta-llama/Llama-3.3-70B-Instruct-Turbo")
    provider = OpenAICompatibleProvider.from_config("llama", "tg", config, KEY)
    assert repr(provider) == "<OpenAICompatibleProvider together:tg https://api.together.xyz>"
    upstream = Upstream(lambda _: streamed(OPENAI_STREAM))
    config = config.model_copy(update={"base_url": f"{upstream.url}/v1"})  # the same, sent here
    await collect(track(OpenAICompatibleProvider.from_config("llama", "tg", config, KEY)), chat())
    assert upstream.requests[0].url.path == "/v1/chat/completions"
    assert upstream.body()["model"] == "meta-llama/Llama-3.3-70B-Instruct-Turbo"
    assert provider.name == "together:tg"


async def test_without_a_key_no_authorization_header_is_sent():
    upstream = Upstream(lambda _: streamed(OPENAI_STREAM))
    config = OpenAIProvider(type="openai", base_url=f"{upstream.url}/v1")
    provider = track(OpenAICompatibleProvider.from_config("m", "vllm", config, None))
    await collect(provider, chat())
    assert "authorization" not in upstream.requests[0].headers


def test_a_base_url_without_scheme_or_host_is_a_value_error():
    with pytest.raises(ValueError, match="base_url"):
        OpenAICompatibleProvider.from_config("m", "p", OpenAIProvider(type="openai", base_url="localhost/v1"), None)


# --- Azure ---------------------------------------------------------------------------------------


async def test_azure_addresses_the_deployment_with_api_version_and_api_key_header():
    upstream = Upstream(lambda _: streamed(OPENAI_STREAM))
    config = AzureProvider(type="azure", model="gpt-4o-mini", api_version="2024-06-01")
    provider = track(AzureOpenAIProvider.from_config(
        "chat-main", "backup", config, KEY, environ={"AZURE_OPENAI_ENDPOINT": f"{upstream.url}/"}
    ))  # the endpoint from the environment: the request came here
    await collect(provider, chat())
    sent = upstream.requests[0]
    assert sent.url.path == "/openai/deployments/gpt-4o-mini/chat/completions"
    assert dict(sent.url.params) == {"api-version": "2024-06-01"}
    assert sent.headers["api-key"] == KEY and "authorization" not in sent.headers
    assert "model" not in upstream.body()
    assert provider.name == "azure:backup"


async def test_azure_deployment_setting_wins_over_the_model_name():
    upstream = Upstream(lambda _: httpx.Response(200, json={"data": [{"index": 0, "embedding": [1.0]}], "usage": {"prompt_tokens": 1}}))
    config = AzureProvider(type="azure", base_url=upstream.url, deployment="my embed")
    provider = track(AzureOpenAIProvider.from_config("emb", "az", config, KEY, environ={}))
    await provider.embed(["x"])
    assert upstream.requests[0].url.raw_path == b"/openai/deployments/my%20embed/embeddings?api-version=2024-10-21"


def test_azure_without_an_endpoint_names_the_config_key_and_the_variable():
    with pytest.raises(ValueError) as caught:
        AzureOpenAIProvider.from_config("chat-main", "backup", AzureProvider(type="azure"), KEY, environ={})
    assert "models.chat-main.providers.backup.base_url" in str(caught.value)
    assert "AZURE_OPENAI_ENDPOINT" in str(caught.value)


# --- Anthropic -----------------------------------------------------------------------------------


def test_anthropic_lifts_system_prompts_and_merges_consecutive_roles():
    system, messages = to_anthropic_messages(
        (
            ChatMessage("system", "Be brief."),
            ChatMessage("user", "one"),
            ChatMessage("user", "two"),
            ChatMessage("developer", "Use French."),
            ChatMessage("assistant", ""),
            ChatMessage("assistant", "un deux"),
            ChatMessage("tool", "result"),
        )
    )
    assert system == "Be brief.\n\nUse French."
    assert messages == [
        {"role": "user", "content": "one\n\ntwo"},
        {"role": "assistant", "content": "un deux"},
        {"role": "user", "content": "result"},
    ]


def test_anthropic_body_maps_stop_max_tokens_and_clamps_temperature():
    provider = anthropic(Upstream(lambda _: httpx.Response(500)), default_max_tokens=999)
    request = GenerateRequest(
        "r",
        SamplingParams(max_tokens=None, temperature=1.7, top_p=1.0, seed=3, stop=("END",)),  # type: ignore[arg-type]
        messages=(ChatMessage("system", "S"), ChatMessage("user", "hi")),
    )
    assert provider.request_body(request) == {
        "model": "claude-x",
        "max_tokens": 999,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "temperature": 1.0,
        "system": "S",
        "stop_sequences": ["END"],
    }
    prompt = GenerateRequest("r", SamplingParams(max_tokens=5, temperature=0.0, top_p=0.9), prompt="Complete me")
    body = provider.request_body(prompt)
    assert body["messages"] == [{"role": "user", "content": "Complete me"}]
    assert (body["max_tokens"], body["temperature"], body["top_p"]) == (5, 0.0, 0.9)
    assert "system" not in body and "stop_sequences" not in body


def anthropic_events(stop_reason: str, *texts: str) -> bytes:
    return anthropic_sse(
        {"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 5, "cache_read_input_tokens": 100, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}},
        {"type": "ping"},
        *({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": t}} for t in texts),
        {"type": "content_block_stop", "index": 1},
        {"type": "message_delta", "delta": {"stop_reason": stop_reason}, "usage": {"output_tokens": 7}},
        {"type": "message_stop"},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
     ("refusal", "content_filter")],
)  # fmt: skip
async def test_anthropic_stream_becomes_deltas_with_finish_reason_and_usage(stop_reason, finish):
    upstream = Upstream(lambda _: streamed(anthropic_events(stop_reason, "Bon", "jour"), split=11))
    provider = anthropic(upstream)
    deltas = await collect(provider, chat(max_tokens=50))
    assert deltas == [TokenDelta("Bon", None, 105, 1), TokenDelta("jour", None, 105, 2), TokenDelta("", finish, 105, 7)]
    sent = upstream.requests[0]
    assert sent.url.path == "/v1/messages"
    assert sent.headers["x-api-key"] == KEY and sent.headers["anthropic-version"] == "2023-06-01"


async def test_anthropic_error_event_mid_stream_is_the_status_of_its_type():
    events = anthropic_sse(
        {"type": "message_start", "message": {"usage": {"input_tokens": 1}}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "a"}},
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    )
    provider = anthropic(Upstream(lambda _: streamed(events)))
    seen: list[TokenDelta] = []
    with pytest.raises(UpstreamStatus) as caught:
        async for delta in provider.generate(chat()):
            seen.append(delta)
    assert [d.text for d in seen] == ["a"]
    assert (caught.value.status, caught.value.error_type, caught.value.retryable) == (529, "overloaded_error", True)


async def test_anthropic_stream_cut_before_message_stop_is_a_connect_error():
    events = anthropic_sse({"type": "message_start", "message": {"usage": {"input_tokens": 1}}})
    with pytest.raises(UpstreamConnectError, match="before message_stop"):
        await collect(anthropic(Upstream(lambda _: streamed(events))), chat())


async def test_anthropic_has_no_embeddings_and_says_so_without_retry():
    with pytest.raises(EmbeddingsUnsupported) as caught:
        await anthropic(Upstream(lambda _: httpx.Response(500))).embed(["x"])
    assert caught.value.retryable is False
    assert "embeddings" in caught.value.message


@pytest.mark.parametrize(
    ("params", "param"),
    [({"logit_bias": ((50256, -100.0),)}, "logit_bias"), ({"presence_penalty": 0.5}, "presence_penalty"),
     ({"frequency_penalty": -1.0}, "frequency_penalty")],
)  # fmt: skip
async def test_anthropic_refuses_what_it_has_no_equivalent_for_before_sending(params, param):
    upstream = Upstream(lambda _: httpx.Response(500))
    provider = anthropic(upstream)
    for call in (lambda: collect(provider, chat(max_tokens=5, **params)), lambda: provider.complete(chat(max_tokens=5, **params))):
        with pytest.raises(UnsupportedParameter) as caught:
            await call()
        assert (caught.value.param, caught.value.code, caught.value.retryable) == (param, "unsupported_parameter", False)
        assert f"no '{param}'" in caught.value.message
    assert upstream.requests == []
    refused = from_provider_error(caught.value)
    assert (refused.status, refused.param, refused.code) == (400, param, "unsupported_parameter")


async def test_openai_body_carries_penalties_and_logit_bias_only_when_set():
    upstream = Upstream(lambda _: streamed(OPENAI_STREAM))
    provider = openai(upstream)
    await collect(provider, chat(max_tokens=5, presence_penalty=0.5, frequency_penalty=-1.0, logit_bias=((3, 2.0), (50256, -100.0))))
    sent = upstream.body()
    assert (sent["presence_penalty"], sent["frequency_penalty"]) == (0.5, -1.0)
    assert sent["logit_bias"] == {"3": 2.0, "50256": -100.0}
    await collect(provider, chat(max_tokens=5))
    assert not {"presence_penalty", "frequency_penalty", "logit_bias"} & set(upstream.body())


# --- OpenAI stream reading -----------------------------------------------------------------------


async def test_openai_stream_is_read_the_same_in_one_byte_pieces():
    deltas = await collect(openai(Upstream(lambda _: streamed(OPENAI_STREAM, split=1))), chat())
    assert deltas[-1] == TokenDelta("", "stop", 9, 2)
    assert "".join(d.text for d in deltas) == "Hello"


async def test_a_stream_that_ends_without_finish_or_done_is_a_connect_error():
    stream = sse(chat_chunk("Hel"), done=False)
    with pytest.raises(UpstreamConnectError, match="ended before it finished"):
        await collect(openai(Upstream(lambda _: streamed(stream))), chat())


async def test_a_finish_reason_without_done_still_finishes():
    stream = sse(chat_chunk("x"), chat_chunk(None, "length"), done=False)
    deltas = await collect(openai(Upstream(lambda _: streamed(stream))), chat())
    assert deltas[-1] == TokenDelta("", "length", 0, 1)


async def test_an_event_that_is_not_json_is_a_protocol_error():
    stream = b"data: {not json\n\n"
    with pytest.raises(UpstreamProtocolError) as caught:
        await collect(openai(Upstream(lambda _: streamed(stream))), chat())
    assert caught.value.retryable is False


async def test_a_json_answer_to_a_stream_request_is_a_protocol_error():
    upstream = Upstream(lambda _: httpx.Response(200, json={"choices": [{"message": {"content": "hi"}}]}))
    with pytest.raises(UpstreamProtocolError, match="where an event stream was expected"):
        await collect(openai(upstream), chat())


async def test_an_error_object_inside_the_stream_is_an_upstream_status():
    stream = sse(chat_chunk("x"), {"error": {"object": "error", "message": "bad prompt", "type": "BadRequestError", "code": 400}})
    with pytest.raises(UpstreamStatus) as caught:
        await collect(openai(Upstream(lambda _: streamed(stream))), chat())
    assert (caught.value.status, caught.value.upstream_message, caught.value.retryable) == (400, "bad prompt", False)


async def test_a_read_error_after_the_first_delta_is_a_connect_error_after_the_deltas():
    upstream = Upstream(lambda _: streamed(OPENAI_STREAM, split=len(sse(chat_chunk("Hel"))) + 140, fail_after=1))
    seen: list[TokenDelta] = []
    with pytest.raises(UpstreamConnectError, match="after the stream started"):
        async for delta in openai(upstream).generate(chat()):
            seen.append(delta)
    assert [d.text for d in seen] == ["Hel"]


# --- errors --------------------------------------------------------------------------------------


async def test_a_refused_connection_is_a_retryable_connect_error_naming_the_upstream():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = OpenAIProvider(type="openai", base_url=f"http://127.0.0.1:{port}/v1")
    provider = OpenAICompatibleProvider.from_config("chat-main", "primary", config, KEY)
    with pytest.raises(UpstreamConnectError) as caught:
        await collect(provider, chat())
    assert caught.value.retryable is True
    assert caught.value.provider == "openai:primary"
    assert f"http://127.0.0.1:{port}" in caught.value.message and KEY not in caught.value.message
    await provider.close()


@pytest.mark.parametrize(
    ("exc", "started", "expected", "words"),
    [
        (aiohttp.ConnectionTimeoutError("timed out"), False, UpstreamConnectError, "within 5 s"),
        (aiohttp.ServerDisconnectedError(), False, UpstreamConnectError, "dropped before answering"),
        (aiohttp.ClientPayloadError("Response payload is not completed"), True, UpstreamConnectError,
         "dropped after the stream started"),
        (aiohttp.SocketTimeoutError("timed out"), False, UpstreamTimeout, "timed out"),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), False, UpstreamConnectError, "dropped"),
    ],
)  # fmt: skip
def test_aiohttp_failures_translate_by_the_table(exc, started, expected, words):
    """The rows of serve/providers/_http.py's table that a local server cannot stage quickly."""
    client = UpstreamClient("openai:primary", "https://up.example/v1", headers={}, max_connections=1, secret=KEY)
    error = client.transport_error(exc, started=started)
    assert type(error) is expected and error.retryable is True
    assert words in error.message and "https://up.example" in error.message


async def test_a_status_error_keeps_the_upstream_message_type_code_and_retry_after():
    body = {"error": {"message": "Rate limit reached for requests", "type": "requests", "param": None, "code": "rate_limit_exceeded"}}
    upstream = Upstream(lambda _: httpx.Response(429, json=body, headers={"retry-after-ms": "1500"}))
    with pytest.raises(UpstreamStatus) as caught:
        await collect(openai(upstream), chat())
    error = caught.value
    assert (error.status, error.retryable, error.retry_after_s) == (429, True, 1.5)
    assert (error.upstream_message, error.error_type, error.code) == ("Rate limit reached for requests", "requests", "rate_limit_exceeded")


async def test_an_unauthorized_answer_never_echoes_the_key_or_its_masked_form():
    body = {"error": {"message": f"Incorrect API key provided: {KEY[:5]}*********{KEY[-4:]}.", "code": "invalid_api_key"}}
    with pytest.raises(UpstreamStatus) as caught:
        await collect(openai(Upstream(lambda _: httpx.Response(401, json=body))), chat())
    assert caught.value.code == "invalid_api_key" and caught.value.retryable is False
    assert KEY[-4:] not in str(caught.value) and KEY[:5] not in str(caught.value)


async def test_a_key_echoed_in_any_error_text_is_redacted():
    upstream = Upstream(lambda _: httpx.Response(400, text=f"bad header x-api-key={KEY}; masked sk-ab****cdef"))
    with pytest.raises(UpstreamStatus) as caught:
        await collect(anthropic(upstream), chat())
    assert caught.value.upstream_message == "bad header x-api-key=[redacted]; masked [redacted]"
    assert KEY not in repr(caught.value.args)


async def test_an_error_without_a_body_uses_the_reason_phrase():
    with pytest.raises(UpstreamStatus) as caught:
        await collect(openai(Upstream(lambda _: httpx.Response(503))), chat())
    assert caught.value.upstream_message == "Service Unavailable" and caught.value.retryable is True


def _in(seconds: float) -> str:
    return format_datetime(datetime.now(timezone.utc) + timedelta(seconds=seconds), usegmt=True)


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        (429, {"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        (503, {"retry-after": "3"}, 3.0),
        (429, {"x-ratelimit-reset-requests": "1m0.5s", "x-ratelimit-remaining-requests": "0",
               "x-ratelimit-reset-tokens": "6m0s", "x-ratelimit-remaining-tokens": "100"}, 60.5),
        (429, {"x-ratelimit-reset-requests": "20ms", "x-ratelimit-reset-tokens": "2s"}, 0.02),
        (429, {"x-ratelimit-reset": "12"}, 12.0),
        (500, {"x-ratelimit-reset-requests": "1s", "x-ratelimit-remaining-requests": "0"}, None),
        (429, {"x-ratelimit-reset-requests": "soon"}, None),
        (429, {}, None),
    ],
)  # fmt: skip
def test_retry_after_headers(status, headers, expected):
    assert retry_after_s(httpx.Headers(headers), status) == expected


def test_retry_after_as_an_http_date():
    assert retry_after_s(httpx.Headers({"retry-after": _in(30)}), 429) == pytest.approx(30, abs=2)


# --- embeddings ----------------------------------------------------------------------------------


async def test_embeddings_come_back_in_input_order_with_usage():
    answer = {"data": [{"index": 1, "embedding": [0.0, 1.0]}, {"index": 0, "embedding": [1.0, 0.0]}], "usage": {"prompt_tokens": 4}}
    upstream = Upstream(lambda _: httpx.Response(200, json=answer))
    result = await openai(upstream, model="text-embedding-3-small").embed(["a", "b"])
    assert result.vectors == [[1.0, 0.0], [0.0, 1.0]] and result.prompt_tokens == 4
    assert upstream.body() == {"input": ["a", "b"], "encoding_format": "float", "model": "text-embedding-3-small"}


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html>gateway</html>"),
        httpx.Response(200, json={"data": [{"index": 0, "embedding": [1.0]}]}),  # one vector for two inputs
        httpx.Response(200, json={"object": "list"}),
    ],
)
async def test_unreadable_embeddings_are_protocol_errors(response):
    with pytest.raises(UpstreamProtocolError):
        await openai(Upstream(lambda _: response)).embed(["a", "b"])


# --- whole answers (no stream) ------------------------------------------------------------------------


async def test_openai_whole_answer_is_one_delta_with_finish_and_usage():
    answer = {"object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"},
              "finish_reason": "length"}], "usage": {"prompt_tokens": 9, "completion_tokens": 2}}  # fmt: skip
    upstream = Upstream(lambda _: httpx.Response(200, json=answer))
    whole = await openai(upstream, model="gpt-x").complete(chat(max_tokens=2))
    assert whole == TokenDelta("Hello", "length", 9, 2)
    body = upstream.body()
    assert body["stream"] is False and "stream_options" not in body and body["max_tokens"] == 2


async def test_openai_whole_text_completion_without_usage_counts_one_token():
    answer = {"object": "text_completion", "choices": [{"index": 0, "text": "once", "finish_reason": None}]}
    upstream = Upstream(lambda _: httpx.Response(200, json=answer))
    whole = await openai(upstream).complete(GenerateRequest("r", SamplingParams(), prompt="Tell"))
    assert whole == TokenDelta("once", "stop", 0, 1)
    assert upstream.requests[-1].url.path == "/v1/completions"


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html>gateway</html>"),
        httpx.Response(200, json=[1, 2]),
        httpx.Response(200, json={"object": "chat.completion", "choices": []}),
        httpx.Response(200, json={"choices": [{"index": 0, "message": {"content": ["not", "text"]}}]}),
    ],
)
async def test_unreadable_whole_answers_are_protocol_errors(response):
    with pytest.raises(UpstreamProtocolError):
        await openai(Upstream(lambda _: response)).complete(chat())


async def test_an_error_body_with_status_200_is_an_upstream_status():
    upstream = Upstream(lambda _: httpx.Response(200, json={"error": {"message": "overloaded", "code": 503}}))
    with pytest.raises(UpstreamStatus) as caught:
        await openai(upstream).complete(chat())
    assert (caught.value.status, caught.value.retryable) == (503, True)


async def test_anthropic_whole_message_joins_text_blocks_and_maps_stop_reason_and_usage():
    answer = {"type": "message", "role": "assistant", "stop_reason": "max_tokens",
              "content": [{"type": "text", "text": "Hel"}, {"type": "tool_use", "id": "t"}, {"type": "text", "text": "lo"}],
              "usage": {"input_tokens": 5, "cache_read_input_tokens": 2, "output_tokens": 2}}  # fmt: skip
    upstream = Upstream(lambda _: httpx.Response(200, json=answer))
    whole = await anthropic(upstream).complete(chat(max_tokens=2))
    assert whole == TokenDelta("Hello", "length", 7, 2)
    assert upstream.body()["stream"] is False


@pytest.mark.parametrize("answer", [[1], {"type": "message", "content": "text"}, {"type": "message", "usage": 3, "content": []}])
async def test_anthropic_unreadable_whole_messages_are_protocol_errors(answer):
    with pytest.raises(UpstreamProtocolError):
        await anthropic(Upstream(lambda _: httpx.Response(200, json=answer))).complete(chat())
