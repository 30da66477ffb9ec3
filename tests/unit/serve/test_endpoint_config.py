"""serve.endpoint without Ray: the args both applications validate, the key from the environment."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError
from ray.serve.schema import ServeDeploySchema

from serve.auth import hash_key
from serve.endpoint import EndpointConfig, EnvironmentKeySource, MissingEndpointKey, build, serve_applications

TINY = {"name": "chat", "runtime": {"model": "builtin:foundry-tiny"}}


def test_args_are_strict():
    with pytest.raises(ValidationError, match="replica"):
        EndpointConfig.model_validate(TINY | {"replica": 2})
    with pytest.raises(ValidationError, match="key_env"):
        EndpointConfig.model_validate(TINY | {"key_env": "NOT A NAME"})
    with pytest.raises(ValidationError, match="engine"):
        EndpointConfig.model_validate({"name": "chat", "runtime": {"engine": "tgi", "model": "/m"}})


def test_the_gateway_refuses_to_build_without_its_key(monkeypatch):
    monkeypatch.delenv("FOUNDRY_TEST_ENDPOINT_KEY", raising=False)
    with pytest.raises(MissingEndpointKey, match="FOUNDRY_TEST_ENDPOINT_KEY"):
        build(TINY | {"key_env": "FOUNDRY_TEST_ENDPOINT_KEY"})
    monkeypatch.setenv("FOUNDRY_TEST_ENDPOINT_KEY", "  ")
    with pytest.raises(MissingEndpointKey):
        build(TINY | {"key_env": "FOUNDRY_TEST_ENDPOINT_KEY"})


def test_the_key_source_holds_one_key_without_rights(monkeypatch):
    monkeypatch.setenv("FOUNDRY_TEST_ENDPOINT_KEY", "sk-one")
    source = EnvironmentKeySource("FOUNDRY_TEST_ENDPOINT_KEY")
    keys = asyncio.run(source.load_active())
    assert list(keys) == [hash_key("sk-one")]
    info = keys[hash_key("sk-one")]
    assert not info.is_admin and not info.limited and info.models is None
    before = asyncio.run(source.fingerprint())
    monkeypatch.setenv("FOUNDRY_TEST_ENDPOINT_KEY", "sk-two")
    assert asyncio.run(source.fingerprint()) != before


def test_serve_config_applications():
    cfg = EndpointConfig.model_validate(
        {"name": "llama", "runtime": {"engine": "vllm", "model": "/models/llama", "tensor_parallel_size": 2}}
    )
    apps = serve_applications(cfg)
    schema = ServeDeploySchema.model_validate({"applications": apps})  # what Serve (and KubeRay) accept
    assert [a.name for a in schema.applications] == ["runtime-llama", "gateway"]
    assert [a.route_prefix for a in schema.applications] == [None, "/v1"]
    assert [a["import_path"] for a in apps] == ["serve.endpoint:build_runtime", "serve.endpoint:build"]
    assert apps[0]["args"] == apps[1]["args"]
    assert EndpointConfig.model_validate(apps[0]["args"]) == cfg
