"""OpenAI wire format: chunks, usage chunk, embeddings encodings."""

from __future__ import annotations

import base64
import struct

import orjson

from serve.gateway import wire
from serve.gateway.errors import ModelNotFound


def decode(chunk: bytes) -> dict:
    assert chunk.startswith(b"data: ") and chunk.endswith(b"\n\n")
    return orjson.loads(chunk[6:-2])


def test_chat_stream_chunks_with_usage():
    w = wire.ChatChunks(rid="r", created=1, model="m", include_usage=True)
    first = decode(w.first())
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert first["usage"] is None
    mid = decode(w.delta("hi", None))
    assert mid["choices"][0]["delta"] == {"content": "hi"} and mid["object"] == "chat.completion.chunk"
    end = decode(w.delta("", "length"))
    assert end["choices"][0]["delta"] == {} and end["choices"][0]["finish_reason"] == "length"
    usage = decode(w.usage(3, 4))
    assert usage["choices"] == [] and usage["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def test_text_stream_has_no_role_chunk_and_no_usage_unless_asked():
    w = wire.TextChunks(rid="r", created=1, model="m", include_usage=False)
    assert w.first() is None
    assert w.usage(1, 1) is None
    assert "usage" not in decode(w.delta("x", None))


def test_embeddings_base64_round_trip():
    vec = [0.25, -1.5, 3.0]
    out = orjson.loads(wire.embeddings("m", [vec], "base64", 2))
    raw = base64.b64decode(out["data"][0]["embedding"])
    assert list(struct.unpack("<3f", raw)) == vec
    assert out["usage"] == {"prompt_tokens": 2, "total_tokens": 2}


def test_error_body_shape():
    body = ModelNotFound("x").body()
    assert body == {
        "error": {
            "message": "The model 'x' does not exist or you do not have access to it.",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }
