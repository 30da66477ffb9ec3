"""The stack as users meet it: `foundry up`, the official openai SDK, the CLI, the usage report.

Every inference request made here (successful or not) is counted in ``SENT``; the usage report
must end up reporting exactly that many. The last test stops the stack with SIGTERM right after
a burst of requests and starts it again on the same FOUNDRY_HOME: nothing recorded is lost.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import openai
import pytest
from e2e_support import ADMIN_KEY, start_stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SENT = {"n": 0}


def sent(k: int = 1) -> None:
    SENT["n"] += k


@pytest.fixture(scope="module")
def client(stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url, api_key=ADMIN_KEY, max_retries=0, timeout=120)


def test_models_lists_both_runtimes(client):
    ids = {m.id for m in client.models.list()}
    assert {"foundry-tiny", "all-minilm-l6-v2"} <= ids


def test_chat_completion(client):
    sent()
    r = client.chat.completions.create(
        model="foundry-tiny", messages=[{"role": "user", "content": "Hello"}], max_tokens=12, temperature=0
    )
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0
    assert 0 < r.usage.completion_tokens <= 12
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_is_deterministic_at_temperature_zero(client):
    sent(2)
    kwargs = dict(model="foundry-tiny", messages=[{"role": "user", "content": "Same"}], max_tokens=10, temperature=0)
    a = client.chat.completions.create(**kwargs).choices[0].message.content
    b = client.chat.completions.create(**kwargs).choices[0].message.content
    assert a == b


def test_chat_stream_with_usage(client):
    sent()
    stream = client.chat.completions.create(
        model="foundry-tiny",
        messages=[{"role": "user", "content": "Stream please"}],
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes and finishes[-1] in ("stop", "length")
    last = chunks[-1]
    assert last.choices == []
    assert last.usage.completion_tokens == 8 or finishes[-1] == "stop"
    assert last.usage.prompt_tokens > 0


def test_stream_text_equals_non_stream_text(client):
    sent(2)
    kwargs = dict(model="foundry-tiny", messages=[{"role": "user", "content": "Compare"}], max_tokens=10, temperature=0)
    full = client.chat.completions.create(**kwargs).choices[0].message.content
    streamed = "".join(
        c.choices[0].delta.content or "" for c in client.chat.completions.create(stream=True, **kwargs) if c.choices
    )
    assert streamed == full


def test_completions(client):
    sent(2)
    r = client.completions.create(model="foundry-tiny", prompt="Once upon a time", max_tokens=6, temperature=0)
    assert r.object == "text_completion"
    assert r.usage.completion_tokens <= 6
    text = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model="foundry-tiny", prompt="Once upon a time", max_tokens=6, temperature=0, stream=True
        )
    )
    assert text == r.choices[0].text


def test_embeddings(client):
    sent(3)
    one = client.embeddings.create(model="all-minilm-l6-v2", input="a cat sits on the mat")  # SDK asks for base64
    assert len(one.data[0].embedding) == 384
    floats = client.embeddings.create(
        model="all-minilm-l6-v2", input=["a cat sits on the mat", "stock markets fell"], encoding_format="float"
    )
    assert [d.index for d in floats.data] == [0, 1]
    assert floats.data[0].embedding == pytest.approx(one.data[0].embedding, abs=1e-5)
    norm = sum(x * x for x in floats.data[1].embedding) ** 0.5
    assert norm == pytest.approx(1.0, abs=1e-4)
    assert floats.usage.prompt_tokens > one.usage.prompt_tokens
    similar = client.embeddings.create(
        model="all-minilm-l6-v2", input=["a kitten rests on a rug"], encoding_format="float"
    ).data[0].embedding
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731
    assert dot(similar, floats.data[0].embedding) > dot(similar, floats.data[1].embedding)


def test_async_client_concurrent_streams(stack):
    async def run() -> list[str]:
        aclient = openai.AsyncOpenAI(base_url=stack.base_url, api_key=ADMIN_KEY, max_retries=0, timeout=120)

        async def one(i: int) -> str:
            stream = await aclient.chat.completions.create(
                model="foundry-tiny",
                messages=[{"role": "user", "content": f"Concurrent {i % 2}"}],
                max_tokens=8,
                temperature=0,
                stream=True,
            )
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

        try:
            return await asyncio.gather(*(one(i) for i in range(8)))
        finally:
            await aclient.close()

    sent(8)
    texts = asyncio.run(run())
    assert texts[0::2] == [texts[0]] * 4  # same prompt, greedy: same text, batched or not
    assert texts[1::2] == [texts[1]] * 4


def test_errors_have_the_openai_shape(stack, client):
    bad = openai.OpenAI(base_url=stack.base_url, api_key="sk-fnd-wrong", max_retries=0)
    sent()
    with pytest.raises(openai.AuthenticationError) as e:
        bad.chat.completions.create(model="foundry-tiny", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 401
    sent()
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "model_not_found"
    sent()
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="foundry-tiny", messages=[{"role": "user", "content": "x"}], max_tokens=-1)
    assert e.value.param == "max_tokens"
    sent()
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="foundry-tiny", messages=[])
    assert e.value.param == "messages"
    sent()
    r = httpx.post(
        f"{stack.base_url}/chat/completions",
        content=b"{not json",
        headers={"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"},
    )
    assert r.status_code == 400
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error"


def test_cli_keys_lifecycle(stack):
    created = json.loads(stack.cli("keys", "create", "--project", "e2e", "--models", "foundry-tiny", "--json").stdout)
    key = created["key"]
    user = openai.OpenAI(base_url=stack.base_url, api_key=key, max_retries=0)
    sent()
    r = user.chat.completions.create(model="foundry-tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert r.choices
    sent()
    with pytest.raises(openai.PermissionDeniedError):
        user.embeddings.create(model="all-minilm-l6-v2", input="not allowed")

    listed = stack.cli("keys", "list", "--json").stdout
    assert key not in listed
    assert created["prefix"] in listed

    stack.cli("keys", "revoke", created["id"])
    deadline = time.monotonic() + 30
    while True:
        sent()
        try:
            user.chat.completions.create(model="foundry-tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
        except openai.AuthenticationError:
            break
        assert time.monotonic() < deadline, "a revoked key still works after 30 s"
        time.sleep(0.5)


def test_rpm_is_exact_with_the_embedded_limiter(stack):
    """No Redis configured: one Ray actor holds the counters."""
    key = json.loads(stack.cli("keys", "create", "--project", "rl", "--rpm", "10", "--json").stdout)["key"]

    async def run():
        aclient = openai.AsyncOpenAI(base_url=stack.base_url, api_key=key, max_retries=0, timeout=120)

        async def one():
            try:
                await aclient.completions.create(model="foundry-tiny", prompt="x", max_tokens=2)
                return 200
            except openai.RateLimitError:
                return 429

        try:
            return await asyncio.gather(*(one() for _ in range(15)))
        finally:
            await aclient.close()

    sent(15)
    statuses = asyncio.run(run())
    assert sorted(statuses) == [200] * 10 + [429] * 5


def test_bench_measures_the_cpu_runtime_and_stores_rows(stack, tmp_path):
    out = tmp_path / "bench.csv"
    sent(8)  # 4 requests at each of 2 concurrency levels
    result = stack.cli(
        "bench", "--base-url", stack.base_url, "--model", "foundry-tiny", "--isl", "16", "--osl", "8",
        "--concurrency", "1,2", "--requests", "4", "--api-key", ADMIN_KEY, "--out", str(out), "--json",
    )  # fmt: skip
    rows = json.loads(result.stdout)
    assert [r["batch_size"] for r in rows] == [1, 2]
    assert all(r["silicon_ttft_ms"] > 0 and r["silicon_tpot_ms"] > 0 for r in rows)
    assert out.read_text().startswith("id,backend,backend_version,model_path,system")
    stored = httpx.get(
        f"{stack.api_url}/benchmarks", params={"model_path": "foundry-tiny"},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30,
    ).json()["data"]  # fmt: skip
    assert {r["id"] for r in rows} <= {r["id"] for r in stored}


def _usage_requests(stack) -> tuple[int, int]:
    cli = json.loads(stack.cli("usage", "--json").stdout)["requests"]
    api = httpx.get(f"{stack.api_url}/usage", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
    return cli, api.json()["requests"]


def test_usage_counts_every_request(stack):
    deadline = time.monotonic() + 30
    while _usage_requests(stack) != (SENT["n"], SENT["n"]):
        assert time.monotonic() < deadline, f"usage {_usage_requests(stack)} != {SENT['n']} requests sent"
        time.sleep(0.5)
    report = json.loads(stack.cli("usage", "--json").stdout)
    tiny = next(m for m in report["models"] if m["model"] == "foundry-tiny")
    assert tiny["latency_p50_ms"] > 0 and tiny["ttft_p95_ms"] >= tiny["ttft_p50_ms"] > 0
    assert tiny["completion_tokens"] > 0


def test_response_headers_and_prometheus_metrics(stack):
    """What the README promises: x-request-id and x-foundry-overhead-ms on every answer, and
    latency/TTFT/overhead histograms labelled by model at /v1/metrics."""
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    body = {"model": "foundry-tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    with httpx.Client(base_url=stack.base_url, headers=headers, timeout=60) as http:
        sent(3)  # plain, streamed, traced (the /api call makes no gateway row)
        plain = http.post("/chat/completions", json=body)
        traced = http.post("/chat/completions", json=body, headers={"x-request-id": "e2e-trace.1"})
        control = http.get(f"{stack.api_url}/nope")
        with http.stream("POST", "/chat/completions", json={**body, "stream": True}) as streamed:
            streamed.read()
        metrics = http.get("/metrics").text
    for reply in (plain, streamed, traced, control):
        # one id, sent back by Serve's ingress; the apps do not add a second (serve/request_id.py)
        assert len(reply.headers.get_list("x-request-id")) == 1, reply.headers
    for reply in (plain, streamed):
        assert reply.status_code == 200
        assert float(reply.headers["x-foundry-overhead-ms"]) >= 0
    assert plain.json()["id"] == "chatcmpl-" + plain.headers["x-request-id"]
    assert traced.headers["x-request-id"] == "e2e-trace.1" and traced.json()["id"] == "chatcmpl-e2e-trace.1"
    for histogram in ("latency", "ttft", "overhead"):
        assert f'foundry_gateway_{histogram}_seconds_bucket{{le="0.005",model="foundry-tiny"}}' in metrics
    assert 'foundry_gateway_requests_total{model="foundry-tiny"' in metrics
    assert 'foundry_gateway_tokens_total{kind="completion",model="foundry-tiny"' in metrics


def test_shutdown_loses_no_record(stack, client):
    """SIGTERM with streams in flight: they finish, buffered rows are flushed, nothing is lost."""
    for _ in range(5):
        sent()
        client.chat.completions.create(model="foundry-tiny", messages=[{"role": "user", "content": "x"}], max_tokens=3)
    started = threading.Barrier(7)
    finished: list[str | None] = []

    def stream() -> None:
        try:
            chunks = client.chat.completions.create(
                model="foundry-tiny", messages=[{"role": "user", "content": "go on"}], max_tokens=48,
                temperature=0, stream=True,
            )  # fmt: skip
            reason = None
            for i, chunk in enumerate(chunks):
                if i == 1:
                    started.wait(60)  # every stream is under way before the signal
                if chunk.choices and chunk.choices[0].finish_reason:
                    reason = chunk.choices[0].finish_reason
            finished.append(reason)
        except Exception as exc:  # reported by the assertion below
            finished.append(repr(exc))

    streams = [threading.Thread(target=stream) for _ in range(6)]
    for t in streams:
        sent()
        t.start()
    started.wait(60)
    assert stack.stop() == 0  # SIGTERM while six streams are in flight
    for t in streams:
        t.join(60)
    assert len(finished) == 6 and all(r in ("stop", "length") for r in finished), finished  # each ran to its end
    again = start_stack(stack.home, stack.port)
    # the session's stack is the restarted one from here on: later modules use it, and the
    # fixture stops it at the end of the session
    stack.proc, stack.log_path = again.proc, again.log_path
    assert _usage_requests(stack) == (SENT["n"], SENT["n"])
