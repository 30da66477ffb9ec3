"""OpenAI request bodies, validated.

Unknown fields are accepted and ignored (clients send many optional ones); known fields are
checked, strictly by JSON type, and a violation becomes a 400 that names the parameter and the
real problem (for a field that takes several shapes, the problem with the shape the client sent). Lists are bounded
as OpenAI bounds them: at most 2,048 messages and 2,048 embedding inputs.

Parameters that would change what the answer is, and that the gateway cannot honour (tool
calling, JSON mode, log probabilities, ...), are refused with a 400 (``unsupported_parameter``)
rather than ignored: a client that asked for a tool call must not get plain text back as if it
had not. Their neutral values (``"tools": []``, ``"logprobs": false``, ...) pass. The
penalties and ``logit_bias`` are honoured: they travel in :class:`SamplingParams` to the
runtimes and OpenAI-compatible providers, and a provider without them refuses them by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, TypeVar


import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema, field_validator

from serve.gateway.errors import InvalidRequest
from serve.runtimes.engine import ChatMessage, GenerateRequest, SamplingParams

MAX_MESSAGES = 2048
MAX_EMBEDDING_INPUTS = 2048
MAX_LOGIT_BIAS = 2048  # token ids in one logit_bias, bounded as the lists are
MAX_TOKENS = 2**31 - 1  # integer parameters are bounded, as JSON numbers in other servers are
INT64 = 2**63


class _Lenient(BaseModel):
    """Lenient about unknown fields, strict about known ones: each takes only the JSON type
    the document gives it (``"temperature": true``, ``"stream": 0`` and ``"max_tokens": "5"``
    are 400s, as schemathesis' negative runs against ``/v1/openapi.json`` expect). As in JSON
    Schema, 5 is a number and 5.0 an integer."""

    model_config = ConfigDict(extra="ignore", strict=True)

    @field_validator("max_tokens", "max_completion_tokens", "n", "seed", "dimensions", mode="before", check_fields=False)
    @classmethod
    def _integral(cls, value: Any) -> Any:
        """JSON Schema's integer is any number without a fraction: 5 and 5.0, not 5.5, "5" or true."""
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value


class TextPart(_Lenient):
    type: Literal["text"]
    text: str


Content = str | list[TextPart]


class _Message(_Lenient):
    content: Content | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class InstructionMessage(_Message):
    """A system, developer or user message: its content is required, as OpenAI requires it."""

    role: Literal["system", "developer", "user"]
    content: Content


class AssistantMessage(_Message):
    """An earlier answer; its content may be null, as OpenAI's may (a turn that only called tools)."""

    role: Literal["assistant"]


class ToolMessage(_Message):
    """A tool's result: content and the id of the call it answers are required."""

    role: Literal["tool"]
    content: Content
    tool_call_id: str


Message = Annotated[InstructionMessage | AssistantMessage | ToolMessage, Field(discriminator="role")]


class StreamOptions(_Lenient):
    include_usage: bool = False


Stop = str | Annotated[list[str], Field(max_length=4)] | None
TOKEN_ID = r"^[0-9]{1,9}$"
LogitBias = Annotated[
    dict[Annotated[str, Field(pattern=TOKEN_ID)], Annotated[float, Field(ge=-100, le=100)]],
    Field(max_length=MAX_LOGIT_BIAS),
    WithJsonSchema({  # pydantic writes the key pattern as patternProperties, which lets other keys pass
        "type": "object", "maxProperties": MAX_LOGIT_BIAS, "propertyNames": {"pattern": TOKEN_ID},
        "additionalProperties": {"type": "number", "minimum": -100, "maximum": 100},
        "description": "token id (of the model's tokenizer) -> bias added to its logit",
    }),
]
Penalty = Annotated[float, Field(ge=-2, le=2)]


@dataclass(frozen=True, slots=True)
class Refusal:
    """A parameter the gateway cannot honour: only null and its ``neutral`` values pass."""

    what: str  # what a non-neutral value asks for
    neutral: tuple[Any, ...] = ()

    def honoured(self, value: Any) -> bool:
        return value is None or any(_json_equal(value, n) for n in self.neutral)

    def json_schema(self) -> dict[str, Any]:
        """What ``/v1/openapi.json`` says of it, so that a fuzzer's valid bodies pass."""
        return {"anyOf": [{"type": "null"}, *({"const": n} for n in self.neutral)],
                "description": f"{self.what} is not supported: only the values given here pass"}  # fmt: skip


def _json_equal(value: Any, neutral: Any) -> bool:
    """Equal as JSON values are: 1 and 1.0 are, false and 0 are not."""
    if isinstance(value, bool) or isinstance(neutral, bool):
        return type(value) is type(neutral) and value == neutral
    return value == neutral


Refused = dict[str, Refusal]


class _Sampling(_Lenient):
    REFUSED: ClassVar[Refused] = {}

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: int | None = Field(default=None, ge=1, le=1, description="only n=1 is supported")
    seed: int | None = Field(default=None, ge=-INT64, lt=INT64)
    stop: Stop = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: LogitBias | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None

    @property
    def stop_tuple(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(s for s in self.stop if s)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


    def sampling(self) -> SamplingParams:
        return SamplingParams(
            max_tokens=self.token_limit,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            seed=self.seed,
            stop=self.stop_tuple,
            presence_penalty=self.presence_penalty or 0.0,
            frequency_penalty=self.frequency_penalty or 0.0,
            logit_bias=tuple(sorted((int(k), float(v)) for k, v in self.logit_bias.items())) if self.logit_bias else (),
        )


class ChatCompletionRequest(_Sampling):
    """Tool calling (``tools``, ``functions``, ``tool_choice`` other than none/auto), a
    ``response_format`` other than text, ``logprobs``/``top_logprobs`` and audio are refused
    with a 400 (``unsupported_parameter``)."""

    REFUSED: ClassVar[Refused] = {
        "tools": Refusal("tool calling", ([],)),
        "functions": Refusal("function calling", ([],)),
        "tool_choice": Refusal("tool calling", ("none", "auto")),
        "function_call": Refusal("function calling", ("none", "auto")),
        "response_format": Refusal("structured output (JSON mode)", ({"type": "text"},)),
        "logprobs": Refusal("log probabilities", (False,)),
        "top_logprobs": Refusal("log probabilities", (0,)),
        "audio": Refusal("audio output"),
        "modalities": Refusal("audio output", (["text"],)),
    }

    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)

    @property
    def token_limit(self) -> int | None:
        """None: the client set no limit (local runtimes default to 256, providers to theirs)."""
        return self.max_completion_tokens or self.max_tokens

    def prompt_estimate(self) -> int:
        """Tokens to reserve before the provider counts them: ~4 characters a token."""
        return sum(len(m.text()) // 4 + 4 for m in self.messages) + 2

    def generate_request(self, request_id: str) -> GenerateRequest:
        messages = tuple(ChatMessage(m.role, m.text()) for m in self.messages)
        return GenerateRequest(request_id=request_id, params=self.sampling(), messages=messages)


class CompletionRequest(_Sampling):
    """``logprobs``, ``echo``, ``best_of`` above 1 and ``suffix`` are refused with a 400
    (``unsupported_parameter``)."""

    REFUSED: ClassVar[Refused] = {
        "logprobs": Refusal("log probabilities", (0,)),
        "echo": Refusal("echoing the prompt", (False,)),
        "best_of": Refusal("best-of sampling", (1,)),
        "suffix": Refusal("insertion (suffix)", ("",)),
    }

    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]

    @property
    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    @property
    def token_limit(self) -> int:
        return self.max_tokens or 16  # the OpenAI completions default

    def prompt_estimate(self) -> int:
        return len(self.prompt_text) // 4 + 1

    def generate_request(self, request_id: str) -> GenerateRequest:
        return GenerateRequest(request_id=request_id, params=self.sampling(), prompt=self.prompt_text)


Text = Annotated[str, Field(min_length=1)]


class EmbeddingRequest(_Lenient):
    model: str = Field(min_length=1)
    input: Text | Annotated[list[Text], Field(min_length=1, max_length=MAX_EMBEDDING_INPUTS)]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1, le=65536)

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


T = TypeVar("T", bound=BaseModel)


def parse_body(raw: bytes, schema: type[T]) -> T:
    """Decode and validate a JSON body; any problem becomes :class:`InvalidRequest`."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    for name, refusal in getattr(schema, "REFUSED", {}).items():
        if name in data and not refusal.honoured(data[name]):
            raise InvalidRequest(
                f"'{name}' asks for {refusal.what}, which this gateway does not support; send the request without it.",
                param=name,
                code="unsupported_parameter",
            )
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        message, param = _describe(exc, data)
        raise InvalidRequest(message, param=param) from None


def _describe(exc: ValidationError, data: dict) -> tuple[str, str | None]:
    """The first problem, as ``(message, param)``. Pydantic reports a field that takes several
    shapes (``str | list[str]``) once per shape, with the shape's name in the location; the
    error that counts is the one for the shape of the value the client sent."""
    errors = [_located(err, data) for err in exc.errors(include_url=False)]
    path, err = min(errors, key=lambda e: not e[2])[:2]  # an error of the sent shape first
    where = ".".join(str(p) for p in path) or "body"
    param = str(path[0]) if path else None
    kind, ctx = err["type"], err.get("ctx") or {}
    tag = str(ctx.get("discriminator", "")).strip("'")  # a discriminated union's tag: messages' role
    if kind == "missing":
        return f"Missing required parameter: '{where}'.", param
    if kind == "union_tag_not_found":
        return f"Missing required parameter: '{where}.{tag}'.", param
    if kind == "union_tag_invalid":
        return f"Invalid value for '{where}.{tag}': {ctx['tag']!r} is not one of {ctx['expected_tags']}.", param
    if kind == "too_long":
        count = ctx.get("actual_length") or len(err["input"])  # pydantic counts no dict's items
        return f"'{where}' has {count} items; at most {ctx.get('max_length')} are allowed.", param
    if path[-1:] == ["[key]"]:  # logit_bias' keys, the only constrained ones
        return (f"Invalid key {path[-2]!r} in '{'.'.join(map(str, path[:-2]))}': keys are token ids,"
                ' integers written as strings ("50256").'), param
    if kind in ("too_short", "string_too_short") and ctx.get("min_length") == 1:
        return f"'{where}' must not be empty.", param
    return f"Invalid value for '{where}': {err['msg'].removeprefix('Value error, ')}.", param


_SHAPES = {"str": str, "int": int, "float": (int, float), "bool": bool, "list": list, "dict": dict}


def _shape(part: str) -> str:
    """``list[constrained-str]`` -> ``list``; ``constrained-str`` -> ``str``."""
    return part.split("[", 1)[0].removeprefix("constrained-")


def _located(err: dict, data: Any) -> tuple[list, dict, bool]:
    """The error's location without shape names, and whether every shape named matches the
    value found there (``input.list[str]`` for a list: yes; ``input.str`` for a list: no)."""
    path, value, matches = [], data, True
    for part in err["loc"]:
        if isinstance(value, dict) and part not in value and part == value.get("role"):
            continue  # the tag pydantic names a discriminated union's member by (messages' role)
        if isinstance(value, dict) and part in value:
            path.append(part)
            value = value[part]
        elif isinstance(value, list) and isinstance(part, int):
            path.append(part)
            value = value[part] if part < len(value) else None
        elif isinstance(part, str) and ((kind := _shape(part)) in _SHAPES or part[:1].isupper()):
            shape = _SHAPES.get(kind, dict)  # a model's name: a JSON object
            matches = matches and isinstance(value, shape) and not (shape is int and isinstance(value, bool))
        else:
            path.append(part)  # a missing key, or a field of an object not sent
            value = None
    return path, err, matches


def model_name_hint(raw: bytes) -> str:
    """Best-effort model name from a body that may not validate (for metrics rows)."""
    try:
        data = orjson.loads(raw)
        return str(data.get("model", ""))[:200] if isinstance(data, dict) else ""
    except orjson.JSONDecodeError:
        return ""
