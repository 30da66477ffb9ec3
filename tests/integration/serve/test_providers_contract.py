"""The contract every outside provider keeps, run against servers that speak each wire protocol
(tests/fakes/upstreams.py): openai and together (OpenAI's protocol), azure (Azure's addressing),
anthropic (the Messages API and its events).

Streams assemble to the upstream's own non-streamed answer, with its finish reason and usage,
and ``complete`` (one JSON answer, no stream) returns that same answer; errors, streamed or not,
are classified for the router (retryable or not, Retry-After); a stream that breaks
after its first delta fails after the deltas; closing or cancelling a stream closes the
upstream request; the API key never shows in an error or a log line.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from serve.config import AnthropicProvider, AzureProvider, OpenAIProvider, TogetherProvider
from serve.providers.anthropic import AnthropicMessagesProvider, EmbeddingsUnsupported
from serve.providers.azure import AzureOpenAIProvider
from serve.providers.errors import ProviderError, UpstreamConnectError, UpstreamStatus
from serve.providers.openai_compat import OpenAICompatibleProvider
from serve.runtimes.engine import ChatMessage, GenerateRequest, SamplingParams, TokenDelta
from tests.fakes.upstreams import AnthropicUpstream, AzureUpstream, FakeUpstream, OpenAIUpstream

KEY = "sk-contract-7Hq2vXw9SECRETkey0042"
KINDS = ["openai", "together", "azure", "anthropic"]
CHAT = (ChatMessage("system", "You are terse."), ChatMessage("user", "Name some words."))
WAIT_S = 10.0


@dataclass
class Upstreams:
    openai: OpenAIUpstream
    azure: AzureUpstream
    anthropic: AnthropicUpstream

    def of(self, kind: str) -> FakeUpstream:
        return {"openai": self.openai, "together": self.openai, "azure": self.azure, "anthropic": self.anthropic}[kind]


@pytest.fixture(scope="module")
def upstreams() -> Iterator[Upstreams]:
    with (
        OpenAIUpstream(seed=3, api_key=KEY) as openai,
        AzureUpstream(seed=3, api_key=KEY, deployments=["gpt-4o-mini"]) as azure,
        AnthropicUpstream(seed=3, api_key=KEY) as anthropic,
    ):
        yield Upstreams(openai, azure, anthropic)


@pytest.fixture(autouse=True)
def fresh(upstreams: Upstreams) -> None:
    for upstream in (upstreams.openai, upstreams.azure, upstreams.anthropic):
        upstream.reset()


def build(kind: str, base_url: str, api_key: str | None = KEY) -> Any:
    """The provider of ``kind`` for model table ``chat-main``, provider table ``p``."""
    if kind == "openai":
        return OpenAICompatibleProvider.from_config("chat-main", "p", OpenAIProvider(type="openai", base_url=base_url, model="gpt-x"), api_key)
    if kind == "together":
        return OpenAICompatibleProvider.from_config("chat-main", "p", TogetherProvider(type="together", base_url=base_url), api_key)
    if kind == "azure":
        return AzureOpenAIProvider.from_config("chat-main", "p", AzureProvider(type="azure", base_url=base_url, deployment="gpt-4o-mini"), api_key)
    return AnthropicMessagesProvider.from_config("chat-main", "p", AnthropicProvider(type="anthropic", base_url=base_url, model="claude-x"), api_key)  # fmt: skip


@pytest.fixture(params=KINDS)
async def case(request: pytest.FixtureRequest, upstreams: Upstreams) -> AsyncIterator[tuple[str, Any, FakeUpstream]]:
    kind = request.param
    upstream = upstreams.of(kind)
    provider = build(kind, upstream.url)
    yield kind, provider, upstream
    await provider.close()


def chat(**params: Any) -> GenerateRequest:
    return GenerateRequest("req-1", SamplingParams(**{"max_tokens": 64, "temperature": 0.0, **params}), messages=CHAT)


async def collect(provider: Any, request: GenerateRequest) -> list[TokenDelta]:
    return [delta async for delta in provider.generate(request)]


@pytest.fixture(params=["generate", "complete"])
def call(request: pytest.FixtureRequest):
    """Ask a provider for an answer by its stream or whole (both fail the same way)."""

    async def ask(provider: Any, request: GenerateRequest) -> TokenDelta:
        if request_kind == "complete":
            return await provider.complete(request)
        return (await collect(provider, request))[-1]

    request_kind = request.param
    return ask


async def direct(kind: str, upstream: FakeUpstream, body: dict[str, Any]) -> tuple[str, str, int, int]:
    """The upstream's non-streamed answer to the request ``provider`` sent (taken from the
    upstream's log): (text, finish, prompt tokens, completion tokens) in OpenAI's terms."""
    sent = upstream.requests[-1]
    body = {**sent.json, **body, "stream": False}
    body.pop("stream_options", None)
    headers = {k: v for k, v in sent.headers.items() if k in ("authorization", "api-key", "x-api-key", "anthropic-version")}
    async with httpx.AsyncClient() as client:
        answer = (await client.post(f"http://127.0.0.1:{upstream.port}{sent.path}", params=sent.query, json=body, headers=headers)).json()
    if kind == "anthropic":
        finish = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}[answer["stop_reason"]]
        usage = answer["usage"]
        return answer["content"][0]["text"], finish, usage["input_tokens"], usage["output_tokens"]
    choice = answer["choices"][0]
    usage = answer["usage"]
    return choice["message"]["content"], choice["finish_reason"], usage["prompt_tokens"], usage["completion_tokens"]


# --- text -----------------------------------------------------------------------------------------


async def test_the_stream_assembles_to_the_non_streamed_answer(case):
    kind, provider, upstream = case
    deltas = await collect(provider, chat())
    text, finish, prompt_tokens, completion_tokens = await direct(kind, upstream, {})
    assert "".join(d.text for d in deltas) == text and len(text.split()) == upstream.tokens
    assert all(d.finish_reason is None for d in deltas[:-1])
    assert (deltas[-1].finish_reason, deltas[-1].prompt_tokens, deltas[-1].completion_tokens) == (
        finish, prompt_tokens, completion_tokens,
    )  # fmt: skip
    assert finish == "stop" and completion_tokens == upstream.tokens
    assert len([d for d in deltas if d.text]) == upstream.tokens  # one delta per upstream chunk
    assert upstream.streams_completed == 1


async def test_the_whole_answer_is_the_non_streamed_answer(case):
    kind, provider, upstream = case
    whole = await provider.complete(chat())
    sent = upstream.requests[-1].json
    assert sent["stream"] is False and "stream_options" not in sent and upstream.streams_completed == 0
    assert whole == TokenDelta(*await direct(kind, upstream, {}))
    assert whole.finish_reason == "stop" and len(whole.text.split()) == whole.completion_tokens == upstream.tokens


async def test_the_whole_answer_keeps_max_tokens_stop_and_prompt(case):
    kind, provider, upstream = case
    chunks = (await _reply(kind, upstream)).chunks
    cut = await provider.complete(chat(max_tokens=3))
    assert (cut.text, cut.finish_reason, cut.completion_tokens) == ("".join(chunks[:3]), "length", 3)
    full = "".join(chunks)
    stop = " " + full.split(" ")[3]
    stopped = await provider.complete(chat(stop=(stop,)))
    assert (stopped.text, stopped.finish_reason) == (full[: full.index(stop)], "stop")
    text = await provider.complete(GenerateRequest("r", SamplingParams(max_tokens=64), prompt="Once upon a time"))
    expected = upstream.reply(("user: " if kind == "anthropic" else "") + "Once upon a time").text
    assert (text.text, text.finish_reason) == (expected, "stop")
    if kind != "anthropic":
        assert not upstream.requests[-1].path.endswith("chat/completions")


async def test_max_tokens_ends_the_answer_with_length(case):
    kind, provider, upstream = case
    deltas = await collect(provider, chat(max_tokens=3))
    assert [d.text for d in deltas if d.text] == [c for c in (await _reply(kind, upstream)).chunks][:3]
    assert (deltas[-1].finish_reason, deltas[-1].completion_tokens) == ("length", 3)


async def test_stop_sequences_are_forwarded_and_end_the_answer(case):
    kind, provider, upstream = case
    full = (await _reply(kind, upstream)).text
    stop = " " + full.split(" ")[3]  # the fourth word, with its space
    deltas = await collect(provider, chat(stop=(stop, "NEVER")))
    assert "".join(d.text for d in deltas) == full[: full.index(stop)]
    assert deltas[-1].finish_reason == "stop"
    sent = upstream.requests[-1].json
    assert sent["stop_sequences" if kind == "anthropic" else "stop"] == [stop, "NEVER"]


async def test_a_prompt_is_answered_as_a_completion(case):
    kind, provider, upstream = case
    deltas = await collect(provider, GenerateRequest("r", SamplingParams(max_tokens=64), prompt="Once upon a time"))
    sent = upstream.requests[-1]
    if kind == "anthropic":
        assert sent.json["messages"] == [{"role": "user", "content": "Once upon a time"}]
        expected = upstream.reply("user: Once upon a time").text
    else:
        assert sent.path.endswith("/completions") and not sent.path.endswith("chat/completions")
        assert sent.json["prompt"] == "Once upon a time"
        expected = upstream.reply("Once upon a time").text
    assert "".join(d.text for d in deltas) == expected
    assert deltas[-1].finish_reason == "stop"


async def _reply(kind: str, upstream: FakeUpstream):
    """What the upstream answers to CHAT (the fakes read a chat as "role: content" lines)."""
    return upstream.reply("system: You are terse.\nuser: Name some words.")


# --- requests as each upstream expects them ---------------------------------------------------------


async def test_openai_request(upstreams):
    provider = build("openai", upstreams.openai.url)
    await collect(provider, chat(seed=11, top_p=0.5))
    await provider.close()
    sent = upstreams.openai.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.json == {
        "model": "gpt-x",
        "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name some words."}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 64,
        "temperature": 0.0,
        "top_p": 0.5,
        "seed": 11,
    }


async def test_together_defaults_the_upstream_model_to_the_model_name(upstreams):
    provider = build("together", upstreams.openai.url)
    await collect(provider, chat())
    await provider.close()
    assert upstreams.openai.requests[-1].json["model"] == "chat-main"


async def test_azure_request(upstreams):
    provider = build("azure", upstreams.azure.url)
    await collect(provider, chat())
    await provider.close()
    sent = upstreams.azure.requests[-1]
    assert sent.path == "/openai/deployments/gpt-4o-mini/chat/completions"
    assert sent.query == {"api-version": "2024-10-21"}
    assert sent.headers["api-key"] == KEY and "authorization" not in sent.headers


@pytest.mark.parametrize(
    ("change", "status"),
    [({"api_key": "wrong-key"}, 401), ({"deployment": "missing"}, 404), ({"api_version": "1999-01-01"}, 404)],
)
async def test_azure_refuses_a_wrong_key_deployment_or_api_version(upstreams, change, status):
    api_key = change.pop("api_key", KEY)
    config = AzureProvider(type="azure", base_url=upstreams.azure.url, deployment="gpt-4o-mini").model_copy(update=change)
    provider = AzureOpenAIProvider.from_config("chat-main", "p", config, api_key)
    with pytest.raises(UpstreamStatus) as caught:
        await collect(provider, chat())
    await provider.close()
    assert caught.value.status == status and caught.value.retryable is False


async def test_anthropic_request(upstreams):
    provider = build("anthropic", upstreams.anthropic.url)
    messages = (*CHAT, ChatMessage("user", "Five, please."), ChatMessage("assistant", "Sure:"))
    request = GenerateRequest("r", SamplingParams(max_tokens=40, temperature=1.5, seed=5, stop=("zulu",)), messages=messages)
    deltas = await collect(provider, request)
    await provider.close()
    sent = upstreams.anthropic.requests[-1]
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == KEY and sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.json == {
        "model": "claude-x",
        "max_tokens": 40,
        "messages": [
            {"role": "user", "content": "Name some words.\n\nFive, please."},
            {"role": "assistant", "content": "Sure:"},
        ],
        "stream": True,
        "temperature": 1.0,
        "system": "You are terse.",
        "stop_sequences": ["zulu"],
    }
    assert deltas[-1].finish_reason in ("stop", "length")


# --- embeddings -----------------------------------------------------------------------------------


async def test_embeddings(case):
    kind, provider, upstream = case
    if kind == "anthropic":
        with pytest.raises(EmbeddingsUnsupported) as caught:
            await provider.embed(["a"])
        assert caught.value.retryable is False
        return
    result = await provider.embed(["first text", "second"])
    assert result.vectors == [upstream.embedding("first text"), upstream.embedding("second")]
    assert result.prompt_tokens == 3
    assert upstream.requests[-1].path.endswith("/embeddings")


# --- errors ---------------------------------------------------------------------------------------


async def test_429_with_retry_after_is_retryable_and_says_when(case, call):
    kind, provider, upstream = case
    upstream.fail_next(1, 429, retry_after_s=2, message="slow down")
    with pytest.raises(UpstreamStatus) as caught:
        await call(provider, chat())
    error = caught.value
    assert (error.status, error.retryable, error.retry_after_s, error.upstream_message) == (429, True, 2.0, "slow down")
    assert error.error_type == ("rate_limit_error" if kind == "anthropic" else "requests")
    assert error.provider == f"{kind}:p"
    assert (await call(provider, chat())).finish_reason == "stop"  # the next request is served


@pytest.mark.parametrize(("status", "retryable"), [(400, False), (404, False), (500, True), (503, True), (529, True)])
async def test_error_statuses_are_classified(case, call, status, retryable):
    _, provider, upstream = case
    upstream.fail_next(1, status)
    with pytest.raises(UpstreamStatus) as caught:
        await call(provider, chat())
    assert (caught.value.status, caught.value.retryable, caught.value.retry_after_s) == (status, retryable, None)


async def test_a_refused_connection_is_a_connect_error(case, call):
    kind, _, _ = case
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = build(kind, f"http://127.0.0.1:{port}" + ("/v1" if kind in ("openai", "together") else ""))
    with pytest.raises(UpstreamConnectError) as caught:
        await call(provider, chat())
    await provider.close()
    assert caught.value.retryable is True and f"127.0.0.1:{port}" in caught.value.message


async def test_a_connection_dropped_mid_stream_fails_after_the_deltas(case):
    _, provider, upstream = case
    upstream.drop_next(1, after_chunks=2)
    seen: list[TokenDelta] = []
    with pytest.raises(UpstreamConnectError, match="after the stream started"):
        async for delta in provider.generate(chat()):
            seen.append(delta)
    assert len(seen) == 2 and all(d.text and d.finish_reason is None for d in seen)
    assert (await collect(provider, chat()))[-1].finish_reason == "stop"  # the pool recovers


async def test_an_error_event_mid_stream_is_an_upstream_status(case):
    kind, provider, upstream = case
    upstream.error_next(1, after_chunks=1)
    seen: list[TokenDelta] = []
    with pytest.raises(UpstreamStatus) as caught:
        async for delta in provider.generate(chat()):
            seen.append(delta)
    assert len(seen) == 1
    assert caught.value.status == (529 if kind == "anthropic" else 500)


async def test_the_upstream_killed_before_answering_is_a_retryable_connect_error(case):
    _, provider, upstream = case
    upstream.delay_next(1, seconds=30)
    reader = asyncio.create_task(collect(provider, chat()))
    await upstream.wait_until(lambda: upstream.active == 1, WAIT_S)
    upstream.stop()
    try:
        with pytest.raises(UpstreamConnectError, match="before answering") as caught:
            await reader
        assert caught.value.retryable is True
    finally:
        upstream.start()
    assert (await collect(provider, chat()))[-1].finish_reason == "stop"


async def test_the_upstream_killed_mid_stream_is_a_connect_error(case):
    kind, provider, upstream = case
    upstream.stall_next(1, seconds=30, after_chunks=1)
    stream = provider.generate(chat())
    first = await anext(stream)
    assert first.text
    upstream.stop()
    try:
        with pytest.raises(UpstreamConnectError):
            await anext(stream)
    finally:
        await stream.aclose()
        upstream.start()  # back on the same port for the other tests
    assert (await collect(provider, chat()))[-1].finish_reason == "stop"


# --- cancellation ----------------------------------------------------------------------------------


async def test_closing_the_stream_closes_the_upstream_request(case):
    _, provider, upstream = case
    upstream.stall_next(1, seconds=30, after_chunks=1)
    stream = provider.generate(chat())
    assert (await anext(stream)).text
    await stream.aclose()
    await upstream.wait_until(lambda: upstream.disconnects == 1, WAIT_S)
    assert upstream.streams_completed == 0


async def test_cancelling_a_reader_waiting_for_the_first_byte_closes_the_upstream_request(case):
    _, provider, upstream = case
    upstream.delay_next(1, seconds=30)
    reader = asyncio.create_task(collect(provider, chat()))
    await upstream.wait_until(lambda: upstream.active == 1, WAIT_S)
    reader.cancel()  # as the router's ttft_ms timeout does
    with pytest.raises(asyncio.CancelledError):
        await reader
    await upstream.wait_until(lambda: upstream.disconnects == 1, WAIT_S)


async def test_cancelling_a_stalled_stream_closes_the_upstream_request(case):
    _, provider, upstream = case
    upstream.stall_next(1, seconds=30, after_chunks=2)
    seen: list[TokenDelta] = []

    async def read() -> None:
        async for delta in provider.generate(chat()):
            seen.append(delta)

    reader = asyncio.create_task(read())
    await upstream.wait_until(lambda: len(seen) == 2, WAIT_S)
    reader.cancel()  # as the router's stall timeout does
    with pytest.raises(asyncio.CancelledError):
        await reader
    await upstream.wait_until(lambda: upstream.disconnects == 1, WAIT_S)
    assert upstream.streams_completed == 0


async def test_one_connection_serves_requests_one_after_another(case):
    kind, provider, upstream = case
    for _ in range(5):
        await collect(provider, chat())
    upstream.fail_next(1, 429)
    with pytest.raises(UpstreamStatus):
        await collect(provider, chat())
    if kind != "anthropic":
        await provider.embed(["x"])
    stream = provider.generate(chat())
    async for delta in stream:
        if delta.finish_reason:  # a reader that stops at the last delta
            break
    await stream.aclose()
    await collect(provider, chat())
    assert len(upstream.connections_seen) == 1  # streams read to their end, error bodies too


async def test_concurrent_streams_share_the_pool(case):
    _, provider, upstream = case
    results = await asyncio.gather(*(collect(provider, chat()) for _ in range(16)))
    assert all(r[-1].finish_reason == "stop" for r in results)
    assert len({"".join(d.text for d in r) for r in results}) == 1
    assert upstream.streams_completed == 16
    opened = len(upstream.connections_seen)
    assert opened <= 16
    for _ in range(4):  # the pool is idle again: no new connection is needed
        await collect(provider, chat())
    assert len(upstream.connections_seen) == opened


# --- secrets ---------------------------------------------------------------------------------------


def _chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


async def test_the_api_key_never_appears_in_errors_or_logs(case, caplog):
    kind, provider, upstream = case
    caplog.set_level(logging.DEBUG)
    errors: list[ProviderError] = []
    faults = [
        lambda: upstream.fail_next(1, 429, retry_after_s=1),
        lambda: upstream.fail_next(1, 400, message=f"echo {KEY}"),
        lambda: upstream.drop_next(1, after_chunks=1),
        lambda: upstream.error_next(1, after_chunks=1),
    ]
    for fault in faults:
        fault()
        try:
            await collect(provider, chat())
        except ProviderError as exc:
            errors.append(exc)
    wrong_key = build(kind, upstream.url, api_key=KEY[::-1])  # 401: the fakes echo a masked key
    try:
        await collect(wrong_key, chat())
    except ProviderError as exc:
        errors.append(exc)
    await wrong_key.close()
    await collect(provider, chat())
    assert len(errors) == len(faults) + 1
    texts = [repr(provider), repr(wrong_key), caplog.text]
    texts += [f"{e!s} {e!r} {e.args!r} {vars(e)!r}" for error in errors for e in _chain(error)]
    texts += [repr(record.args) + record.getMessage() for record in caplog.records]
    for secret in (KEY, KEY[::-1], KEY[-4:], KEY[::-1][-4:]):
        assert not [t for t in texts if secret in t]
