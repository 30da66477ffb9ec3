"""The gateway in front of real HTTP upstreams: every provider type, faults, credentials.

Upstreams are the protocol fakes in tests/fakes/upstreams.py; the gateway is its real FastAPI
app over real HTTP (gateway_harness.py); clients are the official openai SDK and httpx.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
import time

import httpx
import openai
import pytest
from gateway_harness import KEY, GatewayServer

from serve.secrets import encrypt, generate_keypair
from tests.fakes.upstreams import AnthropicUpstream, AzureUpstream, OpenAIUpstream

MSG = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def upstreams():
    started = []

    def start(cls, **kw):
        u = cls(**kw).start()
        started.append(u)
        return u

    yield start
    for u in started:
        u.stop()


@pytest.fixture
def gateway(tmp_path):
    servers = []

    def start(toml: str, **app_args) -> GatewayServer:
        s = GatewayServer(toml, tmp_path / f"g{len(servers)}", **app_args)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


def providers(**upstreams: OpenAIUpstream) -> str:
    """``[models.m.providers.NAME]`` tables, in order, for OpenAI-compatible upstreams (key in $K)."""
    return "".join(
        f'[models.m.providers.{name}]\ntype = "openai"\nbase_url = "{u.url}"\napi_key_env = "K"\n'
        for name, u in upstreams.items()
    )


def table(name: str, kind: str, url: str, **settings: str) -> str:
    """A ``[models.NAME.providers.p]`` table."""
    lines = "".join(f'{key} = "{value}"\n' for key, value in settings.items())
    return f'[models.{name}.providers.p]\ntype = "{kind}"\nbase_url = "{url}"\n{lines}'


def client(gw: GatewayServer, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url, api_key=KEY, max_retries=0, timeout=30, **kw)


def test_all_provider_types(upstreams, gateway, monkeypatch):
    oa = upstreams(OpenAIUpstream, api_key="oa-key", seed=1)
    tg = upstreams(OpenAIUpstream, api_key="tg-key", seed=2)
    az = upstreams(AzureUpstream, api_key="az-key", deployments=["dep"], seed=3)
    an = upstreams(AnthropicUpstream, api_key="an-key", seed=4)
    monkeypatch.setenv("OA_KEY", "oa-key")
    monkeypatch.setenv("TG_KEY", "tg-key")
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "az-key")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "an-key")
    gw = gateway(
        table("oa", "openai", oa.url, api_key_env="OA_KEY")
        + table("tg", "together", tg.url, api_key_env="TG_KEY")
        + table("az", "azure", az.url, deployment="dep")
        + table("an", "anthropic", an.url, model="claude-test")
    )
    c = client(gw)
    for model, upstream in (("oa", oa), ("tg", tg), ("az", az), ("an", an)):
        full = c.chat.completions.create(model=model, messages=MSG, max_tokens=5)
        assert full.choices[0].message.content == upstream.reply("user: hello there", max_tokens=5).text, model
        assert full.usage.completion_tokens > 0
        streamed = "".join(
            ch.choices[0].delta.content or ""
            for ch in c.chat.completions.create(model=model, messages=MSG, max_tokens=5, stream=True)
            if ch.choices
        )
        assert streamed == full.choices[0].message.content, model
    assert c.embeddings.create(model="oa", input="x").data[0].embedding
    rows = gw.wait_rows(9)
    assert {r["provider"] for r in rows} == {"openai:p", "together:p", "azure:p", "anthropic:p"}


def test_penalties_and_logit_bias_go_upstream_or_are_refused_by_name(upstreams, gateway, monkeypatch):
    oa = upstreams(OpenAIUpstream, api_key="oa-key")
    an = upstreams(AnthropicUpstream, api_key="an-key")
    monkeypatch.setenv("OA_KEY", "oa-key")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "an-key")
    gw = gateway(table("oa", "openai", oa.url, api_key_env="OA_KEY") + table("an", "anthropic", an.url, model="claude-test"))
    with client(gw) as c:
        shaping = {"presence_penalty": 0.5, "frequency_penalty": -1, "logit_bias": {"50256": -100, "7": 3}}
        for stream in (False, True):
            answer = c.chat.completions.create(model="oa", messages=MSG, max_tokens=5, stream=stream, **shaping)
            if stream:
                list(answer)  # read to the end
            sent = oa.requests[-1].json
            assert (sent["presence_penalty"], sent["frequency_penalty"]) == (0.5, -1.0)
            assert sent["logit_bias"] == {"7": 3.0, "50256": -100.0}
        for name, value in shaping.items():
            with pytest.raises(openai.BadRequestError) as refused:
                c.chat.completions.create(model="an", messages=MSG, max_tokens=5, **{name: value})
            error = refused.value.body
            assert (error["param"], error["code"]) == (name, "unsupported_parameter")
            assert f"no '{name}'" in error["message"]
        assert an.request_count == 0  # refused before anything was sent
        assert c.chat.completions.create(model="an", messages=MSG, max_tokens=5, presence_penalty=0).choices
    rows = gw.wait_rows(6)
    assert sorted(r["status"] for r in rows) == [200, 200, 200, 400, 400, 400]


def test_primary_killed_under_load_loses_no_unstarted_request(upstreams, gateway, monkeypatch):
    monkeypatch.setenv("K", "k")
    primary = upstreams(OpenAIUpstream, latency_s=0.02, record=False)
    backup = upstreams(OpenAIUpstream, latency_s=0.02, record=False)
    gw = gateway(
        f"""
[models.m]
routing = ["primary", "backup"]
[models.m.timeouts]
ttft_ms = 2000
{providers(primary=primary, backup=backup)}
"""
    )
    c = client(gw)

    def one(i: int) -> str:
        if i % 2:
            return c.chat.completions.create(model="m", messages=MSG, max_tokens=4).choices[0].message.content
        chunks = list(c.chat.completions.create(model="m", messages=MSG, max_tokens=4, stream=True))
        return "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)

    expected = backup.reply("user: hello there", max_tokens=4).text
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(one, i) for i in range(120)]
        while primary.request_count < 20:
            time.sleep(0.01)
        primary.stop()  # killed mid-load
        results = [f.result() for f in futures]  # every request succeeded
    assert results == [expected] * 120
    assert backup.request_count > 0
    rows = gw.wait_rows(120)
    assert all(r["status"] == 200 for r in rows)
    assert any(r["provider"] == "openai:backup" and r["attempts"] >= 2 for r in rows)


def test_breaker_opens_then_recovers(upstreams, gateway, monkeypatch):
    monkeypatch.setenv("K", "k")
    primary = upstreams(OpenAIUpstream)
    backup = upstreams(OpenAIUpstream)
    gw = gateway(
        f"""
[gateway]
breaker_failures = 3
breaker_cooldown_s = 5.0
{providers(primary=primary, backup=backup)}
"""
    )
    c = client(gw)
    primary.fail_next(1000, status=503)
    for _ in range(8):  # well within the cooldown, even on a loaded machine
        c.chat.completions.create(model="m", messages=MSG, max_tokens=2)
    assert primary.request_count == 3  # then skipped while open
    primary.reset()
    # after the cooldown one request probes the primary; it succeeds and closes the breaker
    deadline = time.monotonic() + 30
    while (r := c.chat.completions.with_raw_response.create(model="m", messages=MSG, max_tokens=2)).headers[
        "x-foundry-provider"
    ] != "openai:primary":
        assert time.monotonic() < deadline, "the breaker never let a probe through"
        time.sleep(0.25)
    assert primary.request_count == 1


def test_single_provider_fails_fast_with_503_when_open(upstreams, gateway, monkeypatch):
    monkeypatch.setenv("K", "k")
    up = upstreams(OpenAIUpstream)
    gw = gateway(
        f"""
[gateway]
breaker_failures = 2
breaker_cooldown_s = 60
[models.m.retries]
num_retries = 0
{providers(only=up)}
"""
    )
    up.stop()
    c = client(gw)
    for _ in range(2):
        with pytest.raises(openai.APIStatusError):
            c.chat.completions.create(model="m", messages=MSG)
    t0 = time.monotonic()
    with pytest.raises(openai.InternalServerError) as exc:
        c.chat.completions.create(model="m", messages=MSG)
    assert exc.value.status_code == 503 and time.monotonic() - t0 < 0.5
    assert exc.value.response.headers["retry-after"]


def test_ttft_timeout_uses_the_backup_and_stall_ends_the_stream(upstreams, gateway, monkeypatch):
    monkeypatch.setenv("K", "k")
    primary = upstreams(OpenAIUpstream)
    backup = upstreams(OpenAIUpstream)
    gw = gateway(
        f"""
[models.m.timeouts]
ttft_ms = 300
total_ms = 500
{providers(primary=primary, backup=backup)}
"""
    )
    c = client(gw)
    primary.delay_next(1, seconds=5)
    t0 = time.monotonic()
    r = c.chat.completions.with_raw_response.create(model="m", messages=MSG, max_tokens=3)
    assert r.headers["x-foundry-provider"] == "openai:backup" and time.monotonic() - t0 < 2

    primary.stall_next(1, seconds=5, after_chunks=1)
    with httpx.stream(
        "POST", f"{gw.url}/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
        json={"model": "m", "messages": MSG, "max_tokens": 6, "stream": True}, timeout=10,
    ) as resp:  # fmt: skip
        body = resp.read().decode()
    assert resp.status_code == 200
    events = [line for line in body.splitlines() if line.startswith("data: ")]
    assert '"error"' in events[-1] and "[DONE]" not in body  # one error event, then closed
    rows = gw.wait_rows(2)
    assert rows[-1]["status"] == 504 and rows[-1]["streamed"]


def test_upstream_429_retry_after_is_honoured(upstreams, gateway, monkeypatch):
    monkeypatch.setenv("K", "k")
    up = upstreams(OpenAIUpstream)
    gw = gateway(
        f"""
[models.m.retries]
num_retries = 2
max_delay_s = 4.0
{providers(only=up)}
"""
    )
    up.fail_next(1, status=429, retry_after_s=1)
    t0 = time.monotonic()
    client(gw).chat.completions.create(model="m", messages=MSG, max_tokens=2)
    assert time.monotonic() - t0 >= 1.0
    assert up.request_count == 2


def test_non_retryable_4xx_passes_through_once(upstreams, gateway, monkeypatch):
    monkeypatch.setenv("K", "k")
    primary, backup = upstreams(OpenAIUpstream), upstreams(OpenAIUpstream)
    gw = gateway(
        f"""
{providers(primary=primary, backup=backup)}
"""
    )
    primary.fail_next(1, status=400)
    with pytest.raises(openai.BadRequestError):
        client(gw).chat.completions.create(model="m", messages=MSG)
    assert backup.request_count == 0


def test_encrypted_credential_never_leaks(upstreams, gateway, monkeypatch, caplog):
    secret = "sk-upstream-SECRET-4711"
    private_pem, public_pem = generate_keypair(bits=2048)
    monkeypatch.setenv("FOUNDRY_RSA_PRIVATE_KEY", private_pem)
    up = upstreams(OpenAIUpstream, api_key=secret)
    wrong = upstreams(OpenAIUpstream, api_key="something-else")
    gw = gateway(
        f"""
[models.m.providers.p]
type = "openai"
base_url = "{up.url}"
api_key_encrypted = "{encrypt(public_pem, secret)}"
[models.bad.providers.p]
type = "openai"
base_url = "{wrong.url}"
api_key_encrypted = "{encrypt(public_pem, secret)}"
"""
    )
    caplog.set_level(logging.DEBUG)
    c = client(gw)
    assert c.chat.completions.create(model="m", messages=MSG, max_tokens=2).choices
    assert up.requests[-1].headers["authorization"] == f"Bearer {secret}"
    with pytest.raises(openai.APIStatusError) as exc:  # the upstream refuses the key: 502
        c.chat.completions.create(model="bad", messages=MSG, max_tokens=2)
    assert exc.value.status_code == 502
    assert secret not in exc.value.response.text
    rows = gw.wait_rows(2)
    assert secret not in repr(rows)
    assert secret not in caplog.text
    metrics = httpx.get(f"{gw.url}/metrics").text
    assert secret not in metrics and "foundry_gateway_requests_total" in metrics


def test_a_client_leaving_mid_stream_is_recorded_499_and_the_upstream_request_closed(upstreams, gateway, monkeypatch):
    monkeypatch.setenv("K", "k")
    up = upstreams(OpenAIUpstream, chunk_interval_s=0.2, tokens=50)  # 10 s of stream unless cancelled
    gw = gateway(providers(p=up))
    body = {"model": "m", "messages": MSG, "stream": True}
    with httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as http:
        with http.stream("POST", "/chat/completions", json=body) as r:
            assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert r.headers["cache-control"] == "no-cache"
            rid = r.headers["x-request-id"]
            assert f'"id":"chatcmpl-{rid}"'.encode() in next(r.iter_raw())  # started; then the client goes
    (row,) = gw.wait_rows(1)
    assert row["request_id"] == rid
    assert (row["status"], row["error_type"], row["streamed"]) == (499, "client_disconnected", 1)
    assert up.streams_completed == 0
    asyncio.run(up.wait_until(lambda: up.disconnects == 1, 10))  # the gateway closed its upstream request too
    r = httpx.post(f"{gw.url}/chat/completions", json={**body, "stream": False}, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert int(r.headers["content-length"]) == len(r.content) and float(r.headers["x-foundry-overhead-ms"]) >= 0


def test_request_ids_are_the_clients_when_safe_and_sent_back_once(upstreams, gateway, monkeypatch):
    """x-request-id: the client's own when it is a safe token, else one of ours; it is the
    metrics row's id, and the completion's id is it with OpenAI's prefix. Behind Ray Serve
    (echo_request_id=False) the app leaves the header to Serve's ingress, which sends it back."""
    monkeypatch.setenv("K", "k")
    gw = gateway(providers(p=upstreams(OpenAIUpstream)))
    sdk = client(gw)
    traced = sdk.chat.completions.with_raw_response.create(
        model="m", messages=MSG, extra_headers={"x-request-id": "trace-42.a_b"}
    )
    assert traced.headers.get_list("x-request-id") == ["trace-42.a_b"]
    assert traced.parse().id == "chatcmpl-trace-42.a_b"
    streamed = sdk.chat.completions.create(model="m", messages=MSG, stream=True)
    ids = {chunk.id for chunk in streamed}
    assert ids == {"chatcmpl-" + streamed.response.headers["x-request-id"]}
    for odd in ("has space", "x" * 65, "ünï".encode()):
        r = httpx.post(f"{gw.url}/embeddings", json={"model": "m", "input": "hi"},
                       headers={"Authorization": f"Bearer {KEY}", "x-request-id": odd})  # fmt: skip
        assert r.status_code == 200 and re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])
    rows = gw.wait_rows(5)
    assert [r["request_id"] for r in rows][:2] == ["trace-42.a_b", streamed.response.headers["x-request-id"]]


def test_behind_ray_serve_the_app_leaves_the_request_id_header_to_serve(upstreams, gateway, monkeypatch):
    """Serve's ingress puts the id in the request's headers and sends it back itself; a second
    header from the app would reach the client as "a, b" (tests/e2e checks the real ingress)."""
    monkeypatch.setenv("K", "k")
    behind_serve = gateway(providers(p=upstreams(OpenAIUpstream)), echo_request_id=False)
    for stream in (False, True):
        r = httpx.post(f"{behind_serve.url}/chat/completions", json={"model": "m", "messages": MSG, "stream": stream},
                       headers={"Authorization": f"Bearer {KEY}", "x-request-id": "from-serve-1"})  # fmt: skip
        assert r.status_code == 200 and "x-request-id" not in r.headers
        assert b'"id":"chatcmpl-from-serve-1"' in r.content
