"""Request validation: every bad input is a 400 naming the parameter, never a crash."""

from __future__ import annotations

import orjson
import pytest

from serve.gateway.errors import InvalidRequest
from serve.gateway.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, parse_body

MSG = [{"role": "user", "content": "hi"}]


def body(**kw) -> bytes:
    return orjson.dumps({"model": "m", **kw})


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (body(messages=[]), "messages"),
        (body(messages=MSG, max_tokens=-1), "max_tokens"),
        (body(messages=MSG, max_tokens=0), "max_tokens"),
        (body(messages=MSG, temperature=3), "temperature"),
        (body(messages=MSG, top_p=0), "top_p"),
        (body(messages=MSG, n=2), "n"),
        (body(messages=MSG, stop=["a", "b", "c", "d", "e"]), "stop"),
        (body(messages=[{"role": "wizard", "content": "x"}]), "messages"),
        (body(messages=MSG, presence_penalty=2.5), "presence_penalty"),
        (body(messages=MSG, frequency_penalty=-3), "frequency_penalty"),
        (body(messages=MSG, frequency_penalty="1"), "frequency_penalty"),
        (body(messages=MSG, logit_bias={"50256": 101}), "logit_bias"),
        (body(messages=MSG, logit_bias={"-1": 5}), "logit_bias"),
        (body(messages=MSG, logit_bias=[[1, 5]]), "logit_bias"),
        (orjson.dumps({"messages": MSG}), "model"),
        (b"{not json", None),
        (b"[1, 2]", None),
    ],
)
def test_invalid_chat_requests(raw, param):
    with pytest.raises(InvalidRequest) as exc:
        parse_body(raw, ChatCompletionRequest)
    assert exc.value.status == 400
    assert exc.value.param == param
    assert exc.value.message


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("temperature", True, "a valid number"),
        ("temperature", "0.5", "a valid number"),
        ("max_tokens", "5", "a valid integer"),
        ("max_tokens", 5.5, "a valid integer"),
        ("seed", False, "a valid integer"),
        ("model", 5, "a valid string"),
    ],
)
def test_known_fields_take_only_their_json_type(field, value, expected):
    """Found by schemathesis' negative run: ``"temperature": true`` was read as 1.0."""
    with pytest.raises(InvalidRequest) as exc:
        parse_body(body(messages=MSG, **{field: value}), ChatCompletionRequest)
    assert exc.value.param == field
    assert expected in exc.value.message and f"'{field}'" in exc.value.message


def test_an_integer_is_a_number_and_a_number_without_a_fraction_an_integer():
    """JSON Schema's types, which schemathesis' positive runs send: 1 for a number, 5.0 for an integer."""
    req = parse_body(body(messages=MSG, temperature=1, top_p=1, max_tokens=5.0), ChatCompletionRequest)
    assert (req.temperature, req.token_limit) == (1.0, 5)


def test_chat_defaults_and_unknown_fields_are_ignored():
    req = parse_body(body(messages=MSG, user="u-1", logit_bias={}, stop="END"), ChatCompletionRequest)
    assert req.token_limit is None  # the runtime or provider decides
    assert req.stop_tuple == ("END",)
    assert not req.include_usage


def test_max_completion_tokens_wins():
    req = parse_body(body(messages=MSG, max_tokens=9, max_completion_tokens=5), ChatCompletionRequest)
    assert req.token_limit == 5


def test_an_earlier_answer_may_have_no_content_and_a_tool_result_names_its_call():
    turns = [MSG[0], {"role": "assistant", "content": None}, {"role": "tool", "content": "42", "tool_call_id": "c1"},
             {"role": "developer", "content": "be brief"}]  # fmt: skip
    req = parse_body(body(messages=turns), ChatCompletionRequest)
    assert [(m.role, m.text()) for m in req.messages] == [("user", "hi"), ("assistant", ""), ("tool", "42"), ("developer", "be brief")]


def test_text_content_parts_are_joined():
    req = parse_body(
        body(messages=[{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]),
        ChatCompletionRequest,
    )
    assert req.messages[0].text() == "ab"


def test_completion_prompt_forms():
    assert parse_body(body(prompt="x"), CompletionRequest).prompt_text == "x"
    assert parse_body(body(prompt=["y"]), CompletionRequest).prompt_text == "y"
    with pytest.raises(InvalidRequest) as exc:
        parse_body(body(prompt=["a", "b"]), CompletionRequest)
    assert exc.value.param == "prompt"


def test_embedding_inputs():
    assert parse_body(body(input="x"), EmbeddingRequest).texts == ["x"]
    assert parse_body(body(input=["x", "y"], encoding_format="base64"), EmbeddingRequest).texts == ["x", "y"]
    for bad in ({"input": ""}, {"input": []}, {"input": "x", "encoding_format": "hex"}):
        with pytest.raises(InvalidRequest):
            parse_body(body(**bad), EmbeddingRequest)


@pytest.mark.parametrize(
    ("raw", "schema", "param", "message"),
    [
        # a field of several shapes: the problem with the shape that was sent, not with another
        (body(input=["x"] * 5001), EmbeddingRequest, "input", "'input' has 5001 items; at most 2048 are allowed."),
        (body(input=["x", 3]), EmbeddingRequest, "input", "Invalid value for 'input.1': Input should be a valid string."),
        (body(messages=MSG * 2049), ChatCompletionRequest, "messages", "'messages' has 2049 items; at most 2048"),
        (body(messages=MSG, stop=["a"] * 5), ChatCompletionRequest, "stop", "'stop' has 5 items; at most 4"),
        (body(prompt=["a", "b"]), CompletionRequest, "prompt", "'prompt' has 2 items; at most 1"),
        (body(input=[]), EmbeddingRequest, "input", "'input' must not be empty."),
        (
            body(messages=[{"role": "user", "content": [{"type": "text"}]}]),
            ChatCompletionRequest, "messages", "Missing required parameter: 'messages.0.content.0.text'.",
        ),
        (body(messages=MSG, temperature=3), ChatCompletionRequest, "temperature", "Invalid value for 'temperature'"),
        # messages take their shape from their role, as OpenAI's do
        (body(messages=[{"role": "user"}]), ChatCompletionRequest, "messages", "Missing required parameter: 'messages.0.content'."),
        (body(messages=[MSG[0], {"role": "system", "content": None}]), ChatCompletionRequest, "messages",
         "Invalid value for 'messages.1.content': Input should be a valid string."),
        (body(messages=[{"role": "tool", "content": "42"}]), ChatCompletionRequest, "messages",
         "Missing required parameter: 'messages.0.tool_call_id'."),
        (body(messages=[{"content": "x"}]), ChatCompletionRequest, "messages", "Missing required parameter: 'messages.0.role'."),
        (body(messages=[{"role": "wizard", "content": "x"}]), ChatCompletionRequest, "messages",
         "Invalid value for 'messages.0.role': 'wizard' is not one of 'system', 'developer', 'user', 'assistant', 'tool'."),
        (body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
         ChatCompletionRequest, "messages", "Invalid value for 'messages.0.content.0.type': Input should be 'text'."),
    ],
)  # fmt: skip
def test_errors_name_the_real_problem(raw, schema, param, message):
    with pytest.raises(InvalidRequest) as exc:
        parse_body(raw, schema)
    assert exc.value.param == param
    assert exc.value.message.startswith(message)
    assert "str" not in exc.value.message.split(":")[0]  # no pydantic shape names in the location


CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    "field, value",
    [
        ("tools", [{"type": "function", "function": {"name": "f"}}]),
        ("functions", [{"name": "f"}]),
        ("tool_choice", "required"),
        ("tool_choice", {"type": "function", "function": {"name": "f"}}),
        ("function_call", {"name": "f"}),
        ("response_format", {"type": "json_object"}),
        ("response_format", {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}),
        ("logprobs", True),
        ("top_logprobs", 3),
        ("audio", {"voice": "alloy", "format": "wav"}),
        ("modalities", ["text", "audio"]),
    ],
)
def test_what_would_change_the_answer_is_refused_not_ignored(field, value):
    with pytest.raises(InvalidRequest) as exc:
        parse_body(orjson.dumps({**CHAT, field: value}), ChatCompletionRequest)
    assert (exc.value.param, exc.value.code) == (field, "unsupported_parameter")
    assert f"'{field}' asks for" in exc.value.message and "does not support" in exc.value.message


@pytest.mark.parametrize(
    "extra",
    [
        {"tools": [], "tool_choice": "none", "functions": [], "function_call": "auto"},
        {"response_format": {"type": "text"}, "logprobs": False, "top_logprobs": 0},
        {"modalities": ["text"], "audio": None, "tools": None, "parallel_tool_calls": True, "user": "u-1"},
    ],
)
def test_their_neutral_values_pass(extra):
    assert parse_body(orjson.dumps({**CHAT, **extra}), ChatCompletionRequest).messages[0].text() == "hi"


@pytest.mark.parametrize(("schema", "base"), [(ChatCompletionRequest, CHAT), (CompletionRequest, {"model": "m", "prompt": "x"})])
def test_the_document_names_each_refused_parameters_neutral_values_and_they_pass(schema, base):
    """Found by schemathesis: ``"best_of": {...}`` was valid by the document (any extra field
    was) and refused by the gateway. Now the document lists what passes."""
    for name, refusal in schema.REFUSED.items():
        allowed = refusal.json_schema()["anyOf"]  # what /v1/openapi.json says of it
        assert allowed[0] == {"type": "null"} and [a["const"] for a in allowed[1:]] == list(refusal.neutral)
        for value in (None, *refusal.neutral):
            parse_body(orjson.dumps({**base, name: value}), schema)
        with pytest.raises(InvalidRequest):
            parse_body(orjson.dumps({**base, name: {"x": 1}}), schema)
    assert parse_body(orjson.dumps({**base, "best_of": 1.0} if schema is CompletionRequest else base), schema)


@pytest.mark.parametrize("field, value", [("logprobs", 5), ("echo", True), ("best_of", 3), ("suffix", "}")])
def test_completions_refuse_what_they_cannot_honour(field, value):
    raw = {"model": "m", "prompt": "x", field: value}
    with pytest.raises(InvalidRequest) as exc:
        parse_body(orjson.dumps(raw), CompletionRequest)
    assert (exc.value.param, exc.value.code) == (field, "unsupported_parameter")
    neutral = {"logprobs": None, "echo": False, "best_of": 1, "suffix": ""}[field]
    assert parse_body(orjson.dumps({**raw, field: neutral}), CompletionRequest).prompt_text == "x"


def test_penalties_and_logit_bias_reach_the_sampling_parameters():
    parsed = parse_body(body(messages=MSG, presence_penalty=0.5, frequency_penalty=-1,
                             logit_bias={"7": -100, "3": 2.5}), ChatCompletionRequest)  # fmt: skip
    params = parsed.generate_request("r").params
    assert (params.presence_penalty, params.frequency_penalty) == (0.5, -1.0)
    assert params.logit_bias == ((3, 2.5), (7, -100.0))  # ids as integers, ascending
    plain = parse_body(body(prompt="x", presence_penalty=0, logit_bias={}), CompletionRequest).generate_request("r")
    assert (plain.params.presence_penalty, plain.params.frequency_penalty, plain.params.logit_bias) == (0.0, 0.0, ())


def test_a_logit_bias_key_that_is_no_token_id_is_named():
    with pytest.raises(InvalidRequest) as exc:
        parse_body(body(messages=MSG, logit_bias={"hello": 1}), ChatCompletionRequest)
    assert exc.value.param == "logit_bias"
    assert exc.value.message.startswith("Invalid key 'hello' in 'logit_bias': keys are token ids")
    with pytest.raises(InvalidRequest) as exc:
        parse_body(body(messages=MSG, logit_bias={str(i): 1 for i in range(2049)}), ChatCompletionRequest)
    assert exc.value.message == "'logit_bias' has 2049 items; at most 2048 are allowed."
