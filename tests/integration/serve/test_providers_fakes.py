"""The protocol fakes in tests/fakes/upstreams.py speak the real protocols: the official ``openai``
SDK talks to the OpenAI fake, the Anthropic fake refuses what the Messages API refuses, and a
stopped fake behaves like a killed process (and comes back on its port)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from tests.fakes.upstreams import AnthropicUpstream, AzureUpstream, OpenAIUpstream

REPO = Path(__file__).resolve().parents[3]
MESSAGES = [{"role": "user", "content": "Say something."}]


@pytest.fixture(scope="module")
def upstream():
    with OpenAIUpstream(seed=9, api_key="sk-fake") as fake:
        yield fake


@pytest.fixture
async def client(upstream):
    upstream.reset()
    async with openai.AsyncOpenAI(base_url=upstream.url, api_key="sk-fake", max_retries=0) as sdk:
        yield sdk


async def test_the_openai_sdk_reads_chat_answers_streamed_and_not(client, upstream):
    whole = await client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=5)
    stream = await client.chat.completions.create(
        model="m", messages=MESSAGES, max_tokens=5, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content == upstream.reply("user: Say something.", max_tokens=5).text
    assert whole.choices[0].finish_reason == "length"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens == 5


async def test_the_openai_sdk_reads_completions_and_base64_embeddings(client, upstream):
    completion = await client.completions.create(model="m", prompt="Once", max_tokens=50, stop=[" "])
    assert completion.choices[0].text == upstream.reply("Once").chunks[0]
    embeddings = await client.embeddings.create(model="e", input=["a", "b"])  # the SDK asks for base64
    for got, text in zip(embeddings.data, ["a", "b"], strict=True):
        assert got.embedding == pytest.approx(upstream.embedding(text), abs=1e-6)


async def test_the_openai_sdk_sees_faults_as_openai_errors(client, upstream):
    upstream.fail_next(1, 429, retry_after_s=7)
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model="m", messages=MESSAGES)
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.code == "rate_limit_exceeded"
    async with openai.AsyncOpenAI(base_url=upstream.url, api_key="sk-wrong-key", max_retries=0) as wrong:
        with pytest.raises(openai.AuthenticationError):
            await wrong.chat.completions.create(model="m", messages=MESSAGES)


def test_answers_depend_on_seed_and_prompt_only():
    a, b, c = OpenAIUpstream(seed=1), OpenAIUpstream(seed=1), OpenAIUpstream(seed=2)
    assert a.reply("hello").text == b.reply("hello").text != c.reply("hello").text
    assert a.reply("hello").text != a.reply("hello!").text
    assert a.reply("x", stop=[a.reply("x").chunks[2]]).ended_by == "stop_sequence"


def test_a_stopped_upstream_refuses_connections_and_comes_back_on_its_port():
    with OpenAIUpstream(record=False) as fake:
        url = fake.url
        body = {"model": "m", "messages": MESSAGES}
        assert httpx.post(f"{url}/chat/completions", json=body).status_code == 200
        fake.stop()
        with pytest.raises(httpx.ConnectError):
            httpx.post(f"{url}/chat/completions", json=body)
        fake.start()
        assert fake.url == url
        assert httpx.post(f"{url}/chat/completions", json=body).status_code == 200
        assert fake.requests == [] and fake.request_count == 2  # record=False: counters only


@pytest.mark.parametrize(
    ("change", "status", "error_type"),
    [
        ({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "u"}]}, 400, "invalid_request_error"),
        ({"max_tokens": None}, 400, "invalid_request_error"),
        ({"temperature": 1.5}, 400, "invalid_request_error"),
        ({"stop": ["x"]}, 400, "invalid_request_error"),
        ({"headers": {"anthropic-version": ""}}, 400, "invalid_request_error"),
        ({"headers": {"x-api-key": "nope"}}, 401, "authentication_error"),
    ],
)
def test_the_anthropic_fake_refuses_what_the_messages_api_refuses(change, status, error_type):
    body = {"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01", **change.pop("headers", {})}
    body = {k: v for k, v in {**body, **change}.items() if v is not None}
    with AnthropicUpstream(api_key="k") as fake:
        answer = httpx.post(f"{fake.url}/v1/messages", json=body, headers=headers)
    assert answer.status_code == status
    assert answer.json()["type"] == "error" and answer.json()["error"]["type"] == error_type


def test_the_azure_fake_checks_key_deployment_and_api_version():
    with AzureUpstream(deployments=["d1"], api_key="az") as fake:
        url = f"{fake.url}/openai/deployments/d1/chat/completions"
        body = {"messages": MESSAGES}

        def post(target: str, key: str = "az", version: str = "2024-10-21") -> int:
            return httpx.post(target, params={"api-version": version}, json=body, headers={"api-key": key}).status_code

        assert post(url) == 200
        assert post(url, key="other") == 401
        assert post(url, version="2023-01-01") == 404
        assert post(url.replace("/d1/", "/d2/")) == 404
        assert post(f"{fake.url}/v1/chat/completions") == 404


def test_a_fake_runs_from_the_shell():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "tests.fakes.upstreams", "openai", "--latency-ms", "1"]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()  # "openai upstream at http://127.0.0.1:PORT/v1"
        assert line.startswith("openai upstream at http://127.0.0.1:"), process.stderr.read() if not line else line
        answer = httpx.post(f"{line.split()[-1]}/chat/completions", json={"model": "m", "messages": MESSAGES}, timeout=10)
        assert answer.json()["choices"][0]["finish_reason"] == "stop"
    finally:
        process.terminate()
        assert process.wait(timeout=15) == 0
        process.stdout.close()
        process.stderr.close()
