"""An endpoint (serve.endpoint) deployed as KubeRay deploys a RayService's ``serveConfigV2``:
the Serve config validated as ``ServeDeploySchema`` and applied by the Serve controller (what the
dashboard's ``PUT /api/serve/applications/`` and ``serve run config.yaml`` do), on a local Ray
cluster of this module's own.

The key reaches the replicas as it does on a pod: an environment variable of the node (set here
before Ray starts, so the raylet and its workers inherit it), never inside the config. Driven
with the official ``openai`` SDK: the built-in tiny model answers with the key and 401s without.
"""

from __future__ import annotations

import os
import socket
import time

import httpx
import openai
import pytest
import ray
from ray import serve
from ray.serve._private.api import serve_start
from ray.serve.schema import ServeDeploySchema

from serve.endpoint import DEFAULT_KEY_ENV, EndpointConfig, serve_applications

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

KEY = "sk-fnd-endpoint-test-key-0123456789abcdefghijklmnopqr"
NAME = "tiny-endpoint"
READY_TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    assert not ray.is_initialized(), "this module starts a Ray cluster of its own (the key is in its environment)"
    home = tmp_path_factory.mktemp("endpoint-home")
    previous = os.environ.get(DEFAULT_KEY_ENV)
    os.environ[DEFAULT_KEY_ENV] = KEY
    http_port = _free_port()
    try:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        cfg = EndpointConfig(name=NAME, runtime={"engine": "cpu", "model": "builtin:foundry-tiny"}, home=str(home))
        config = ServeDeploySchema.model_validate({"applications": serve_applications(cfg)})
        assert KEY not in config.model_dump_json()
        client = serve_start(http_options={"host": "127.0.0.1", "port": http_port})
        client.deploy_apps(config)
        wait_until(lambda: _all_running(["gateway", f"runtime-{NAME}"]), READY_TIMEOUT_S, "both applications RUNNING")
        base_url = f"http://127.0.0.1:{http_port}/v1"
        # the gateway offers the model once it sees the runtime registered (its route source)
        wait_until(lambda: NAME in _listed(base_url), 10, f"{NAME} in /v1/models")
        yield base_url
    finally:
        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()
        if previous is None:
            os.environ.pop(DEFAULT_KEY_ENV, None)
        else:
            os.environ[DEFAULT_KEY_ENV] = previous


def _listed(base_url: str) -> list[str]:
    reply = httpx.get(f"{base_url}/models", headers={"authorization": f"Bearer {KEY}"}, timeout=10)
    return [m["id"] for m in reply.json()["data"]] if reply.status_code == 200 else []


def _all_running(apps: list[str]) -> bool:
    status = serve.status().applications
    for name in apps:
        app = status.get(name)
        if app is not None and app.status == "DEPLOY_FAILED":
            details = "; ".join(f"{d}: {s.message}" for d, s in app.deployments.items())
            raise AssertionError(f"{name} failed to deploy: {app.message} {details}")
        if app is None or app.status != "RUNNING":
            return False
    return True


def test_chat_with_the_key(endpoint):
    client = openai.OpenAI(base_url=endpoint, api_key=KEY, max_retries=0, timeout=120)
    assert [m.id for m in client.models.list().data] == [NAME]
    reply = client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "Say hello"}], max_tokens=8, temperature=0
    )
    assert reply.model == NAME
    assert reply.choices[0].message.content
    assert 0 < reply.usage.completion_tokens <= 8
    stream = client.completions.create(model=NAME, prompt="Once upon", max_tokens=4, stream=True)
    assert "".join(chunk.choices[0].text for chunk in stream if chunk.choices)


@pytest.mark.parametrize(
    ("key", "code"), [(None, "missing_api_key"), ("sk-fnd-not-the-endpoint-key-000000000000000000000", "invalid_api_key")]
)
def test_refused_without_the_key(endpoint, key, code):
    headers = {"authorization": f"Bearer {key}"} if key else {}
    reply = httpx.post(
        f"{endpoint}/chat/completions", headers=headers, timeout=30,
        json={"model": NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
    )  # fmt: skip
    assert reply.status_code == 401
    assert reply.json()["error"]["code"] == code
    if key is not None:  # (the SDK itself refuses to send no key)
        client = openai.OpenAI(base_url=endpoint, api_key=key, max_retries=0, timeout=30)
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "hi"}], max_tokens=2)


def test_the_runtime_has_no_route_of_its_own(endpoint):
    root = endpoint.removesuffix("/v1")
    assert httpx.post(f"{root}/", json={"prompt": "x"}, timeout=10).status_code == 404
