"""``/v1/openapi.json`` describes the gateway, and schemathesis finds nothing wrong with it.

The fuzzer sends schema-valid and schema-violating requests to every route of the real gateway
app (real HTTP, a seeded OpenAI-compatible upstream behind it) and checks: no server errors,
status codes and content types the document declares, responses that match their schemas,
valid bodies accepted, invalid ones refused.
"""

from __future__ import annotations

import os

import httpx
import pytest
import schemathesis
from gateway_harness import KEY, GatewayServer
from hypothesis import HealthCheck, assume, given, settings
from schemathesis import GenerationMode

from serve.gateway.schemas import ChatCompletionRequest, CompletionRequest
from tests.fakes.upstreams import OpenAIUpstream

MAX_EXAMPLES = int(os.environ.get("FOUNDRY_FUZZ_EXAMPLES", "30"))  # per operation and mode; more by hand

AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    upstream = OpenAIUpstream(api_key="k", seed=7).start()
    import os

    os.environ["FOUNDRY_TEST_UPSTREAM_KEY"] = "k"
    gw = GatewayServer(
        f"""
[models.chat.providers.p]
type = "openai"
base_url = "{upstream.url}"
api_key_env = "FOUNDRY_TEST_UPSTREAM_KEY"
""",
        tmp_path_factory.mktemp("gateway-openapi"),
    )
    yield gw
    gw.stop()
    upstream.stop()
    os.environ.pop("FOUNDRY_TEST_UPSTREAM_KEY", None)


@pytest.fixture(scope="module")
def gateway_schema(gateway):
    return schemathesis.openapi.from_url(f"{gateway.url}/openapi.json")


def test_the_document_names_routes_bodies_and_models(gateway):
    doc = httpx.get(f"{gateway.url}/openapi.json", timeout=10).json()
    assert set(doc["paths"]) == {"/chat/completions", "/completions", "/embeddings", "/models"}
    chat = doc["paths"]["/chat/completions"]["post"]
    assert chat["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/ChatCompletionRequest")
    assert {"200", "400", "401", "413", "429"} <= set(chat["responses"])
    assert doc["components"]["schemas"]["ChatCompletionRequest"]["properties"]["model"]["enum"] == ["chat"]
    # what is refused unless neutral is described with its neutral values (tested in test_gateway_schemas)
    assert doc["components"]["schemas"]["CompletionRequest"]["properties"]["best_of"]["anyOf"] == [{"type": "null"}, {"const": 1}]
    assert set(CompletionRequest.REFUSED) <= set(doc["components"]["schemas"]["CompletionRequest"]["properties"])
    assert set(ChatCompletionRequest.REFUSED) <= set(doc["components"]["schemas"]["ChatCompletionRequest"]["properties"])


def test_unknown_urls_and_methods_are_named_in_the_error_shape(gateway):
    missing = httpx.get(f"{gateway.url}/nope", headers=AUTH, timeout=10)
    assert missing.status_code == 404
    assert missing.json()["error"] == {
        "message": "Invalid URL (GET /nope).", "type": "invalid_request_error", "param": None, "code": "unknown_url",
    }  # fmt: skip
    for method, path, allowed in (("GET", "/chat/completions", "POST"), ("DELETE", "/models", "GET")):
        wrong = httpx.request(method, f"{gateway.url}{path}", headers=AUTH, timeout=10)
        assert wrong.status_code == 405 and wrong.headers["allow"] == allowed
        error = wrong.json()["error"]
        assert error["code"] == "method_not_allowed" and f"({method} {path}); this URL takes {allowed}" in error["message"]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_gateway_holds_to_its_document(gateway_schema, mode):
    operations = [result.ok() for result in gateway_schema.get_all_operations()]
    assert len(operations) == 4
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def holds(case):
            # the upstream's vectors have 8 dimensions: asking for more is a 400 (tested apart)
            assume(not (mode is GenerationMode.POSITIVE and _more_dimensions_than(8, case)))
            case.call_and_validate(headers=AUTH)

        holds()


def _more_dimensions_than(native: int, case) -> bool:
    body = case.body if isinstance(case.body, dict) else {}
    return isinstance(body.get("dimensions"), (int, float)) and body["dimensions"] > native  # 9.0 is an integer too
