"""Hostile input is refused before it costs anything: body size, list lengths, named problems."""

from __future__ import annotations

import httpx
import pytest
from gateway_harness import KEY, GatewayServer

from tests.fakes.upstreams import OpenAIUpstream

AUTH = {"authorization": f"Bearer {KEY}"}


@pytest.fixture
def gateway(tmp_path, monkeypatch):
    upstream = OpenAIUpstream(api_key="k", seed=1).start()
    monkeypatch.setenv("K", "k")
    gw = GatewayServer(
        f"""
[gateway]
max_body_bytes = 65536
[models.m.providers.p]
type = "openai"
base_url = "{upstream.url}"
api_key_env = "K"
""",
        tmp_path,
    )
    yield gw
    gw.stop()
    upstream.stop()


def test_an_oversized_body_is_refused_with_413_naming_the_limit(gateway):
    big = b'{"model": "m", "messages": [{"role": "user", "content": "' + b"x" * 200_000 + b'"}]}'
    with httpx.Client(base_url=gateway.url, headers=AUTH, timeout=30) as http:
        declared = http.post("/chat/completions", content=big, headers={"content-type": "application/json"})

        def chunks():  # no Content-Length: refused while reading
            for i in range(0, len(big), 8192):
                yield big[i : i + 8192]

        streamed = http.post("/completions", content=chunks(), headers={"content-type": "application/json"})
        ok = http.post("/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    for reply in (declared, streamed):
        assert reply.status_code == 413, reply.text
        err = reply.json()["error"]
        assert err["type"] == "invalid_request_error" and err["code"] == "request_too_large"
        assert "65,536 bytes" in err["message"]
    assert "200,0" in declared.json()["error"]["message"]  # the declared size is named
    assert ok.status_code == 200
    rows = gateway.wait_rows(3)
    assert sorted(r["status"] for r in rows) == [200, 413, 413]  # refused requests are recorded too
    assert all(r["key_id"] for r in rows)  # and charged to the key that sent them


def test_too_many_embedding_inputs_names_the_count(gateway):
    with httpx.Client(base_url=gateway.url, headers=AUTH, timeout=30) as http:
        reply = http.post("/embeddings", json={"model": "m", "input": ["a"] * 2049})
    assert reply.status_code == 400
    err = reply.json()["error"]
    assert err["param"] == "input"
    assert err["message"] == "'input' has 2049 items; at most 2048 are allowed."


def test_an_unknown_key_is_refused_before_the_body_size(gateway):
    big = b"x" * 100_000
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        reply = http.post("/chat/completions", content=big, headers={"authorization": "Bearer sk-nope"})
    assert reply.status_code == 401  # who you are is checked before how much you sent


def test_dimensions_shortens_embeddings_as_openai_does(gateway):
    with httpx.Client(base_url=gateway.url, headers=AUTH, timeout=30) as http:
        full = http.post("/embeddings", json={"model": "m", "input": ["a cat"]}).json()["data"][0]["embedding"]
        short = http.post("/embeddings", json={"model": "m", "input": ["a cat"], "dimensions": 3}).json()
        too_many = http.post("/embeddings", json={"model": "m", "input": ["a cat"], "dimensions": len(full) + 1})
    vector = short["data"][0]["embedding"]
    assert len(vector) == 3
    assert abs(sum(x * x for x in vector) - 1.0) < 1e-6  # unit length again
    scale = vector[0] / full[0]
    assert all(abs(v - f * scale) < 1e-6 for v, f in zip(vector, full[:3]))  # the same direction
    assert too_many.status_code == 400
    assert too_many.json()["error"]["param"] == "dimensions"
    assert f"at most {len(full)}" in too_many.json()["error"]["message"]
