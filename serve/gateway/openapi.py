"""The gateway's OpenAPI document (``GET /v1/openapi.json``).

The routes read raw bodies (validation is :mod:`serve.gateway.schemas`, once, on the hot
path), so FastAPI cannot see their bodies; this module describes them from the same pydantic
models, with the responses and errors each route can give. ``model`` is an enum of the models
this gateway serves, so a client (or a fuzzer) knows which names exist.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from serve.gateway.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest

REF = "#/components/schemas/{model}"

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}

_USAGE = {
    "type": "object",
    "required": ["prompt_tokens", "total_tokens"],
    "properties": {
        "prompt_tokens": {"type": "integer"},
        "completion_tokens": {"type": "integer"},
        "total_tokens": {"type": "integer"},
    },
}

_COMPLETION = {
    "type": "object",
    "required": ["id", "object", "created", "model", "choices", "usage"],
    "properties": {
        "id": {"type": "string"},
        "object": {"type": "string", "enum": ["chat.completion", "text_completion"]},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "choices": {"type": "array", "items": {"type": "object"}},
        "usage": {"$ref": "#/components/schemas/Usage"},
    },
}

_EMBEDDINGS = {
    "type": "object",
    "required": ["object", "data", "model", "usage"],
    "properties": {
        "object": {"const": "list"},
        "data": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["object", "index", "embedding"],
                "properties": {
                    "object": {"const": "embedding"},
                    "index": {"type": "integer"},
                    "embedding": {"oneOf": [{"type": "array", "items": {"type": "number"}}, {"type": "string"}]},
                },
            },
        },
        "model": {"type": "string"},
        "usage": {"$ref": "#/components/schemas/Usage"},
    },
}

_SSE_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {"data": {"type": "string"}, "event": {"type": "string"}, "id": {"type": "string"}},
}

_MODELS = {
    "type": "object",
    "required": ["object", "data"],
    "properties": {
        "object": {"const": "list"},
        "data": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "object", "created", "owned_by"],
                "properties": {
                    "id": {"type": "string"},
                    "object": {"const": "model"},
                    "created": {"type": "integer"},
                    "owned_by": {"type": "string"},
                },
            },
        },
    },
}

# status -> when; every route that takes a body can give all of these
_BODY_ERRORS = {
    "400": "The body is not valid JSON or a parameter is invalid (the error names it).",
    "401": "No API key, or an unknown or revoked one.",
    "403": "The key may not use this model.",
    "404": "No such model.",
    "413": "The body is larger than [gateway] max_body_bytes.",
    "429": "A rate limit or budget of the key or its project (Retry-After says when to retry).",
    "502": "The upstream refused the request for a reason of this gateway's configuration.",
    "503": "No provider could answer, or the limit or key store is unreachable.",
    "504": "The upstream did not answer in time.",
}


def describe(app: FastAPI, models: list[str]) -> dict[str, Any]:
    """The OpenAPI document of the gateway app, its request bodies and responses filled in."""
    doc = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.update({"Error": _ERROR, "Usage": _USAGE, "Completion": _COMPLETION, "Embeddings": _EMBEDDINGS, "Models": _MODELS})
    for path, model in (
        ("/chat/completions", ChatCompletionRequest),
        ("/completions", CompletionRequest),
        ("/embeddings", EmbeddingRequest),
    ):
        body = model.model_json_schema(ref_template=REF)
        schemas.update(body.pop("$defs", {}))
        if models:
            body["properties"]["model"] = {"type": "string", "enum": sorted(models)}
        body["properties"].update({name: refusal.json_schema() for name, refusal in getattr(model, "REFUSED", {}).items()})
        schemas[model.__name__] = body
        operation = doc["paths"][path]["post"]
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}},
        }
        ok = "Embeddings" if path == "/embeddings" else "Completion"
        content: dict[str, Any] = {"application/json": {"schema": {"$ref": REF.format(model=ok)}}}
        if path != "/embeddings":
            # with "stream": true, one event per chunk: `data: <chunk JSON>`, last `data: [DONE]`
            content["text/event-stream"] = {"schema": _SSE_EVENT}
        operation["responses"] = {"200": {"description": "OK", "content": content}} | _errors(_BODY_ERRORS)
        operation["security"] = [{"apiKey": []}]
    models_op = doc["paths"]["/models"]["get"]
    models_op["responses"] = {
        "200": {"description": "The models this key may use.", "content": {"application/json": {"schema": {"$ref": REF.format(model="Models")}}}}
    } | _errors({"401": _BODY_ERRORS["401"], "503": "An unknown key while the key store is unreachable."})
    models_op["security"] = [{"apiKey": []}]
    doc["components"]["securitySchemes"] = {"apiKey": {"type": "http", "scheme": "bearer"}}
    return doc


def _errors(statuses: dict[str, str]) -> dict[str, Any]:
    return {
        status: {"description": why, "content": {"application/json": {"schema": {"$ref": REF.format(model="Error")}}}}
        for status, why in statuses.items()
    }
