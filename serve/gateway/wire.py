"""OpenAI response bodies and stream chunks, serialised with orjson."""

from __future__ import annotations

import base64
import struct

import orjson

from serve.gateway.errors import GatewayError

DONE = b"data: [DONE]\n\n"


def sse(obj: dict) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def sse_error(err: GatewayError) -> bytes:
    return b"data: " + err.json() + b"\n\n"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_completion(rid: str, created: int, model: str, text: str, finish: str | None, pt: int, ct: int) -> bytes:
    return orjson.dumps(
        {
            "id": rid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
            "usage": usage(pt, ct),
        }
    )


def text_completion(rid: str, created: int, model: str, text: str, finish: str | None, pt: int, ct: int) -> bytes:
    return orjson.dumps(
        {
            "id": rid,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
            "usage": usage(pt, ct),
        }
    )


class ChunkWriter:
    """Builds the chunks of one stream; one subclass per kind of stream."""

    object = ""

    def __init__(self, *, rid: str, created: int, model: str, include_usage: bool) -> None:
        self._base = {"id": rid, "object": self.object, "created": created, "model": model}
        self._include_usage = include_usage

    def first(self) -> bytes | None:
        """What opens the stream before any text (nothing, unless the kind says otherwise)."""
        return None

    def delta(self, text: str, finish: str | None) -> bytes:
        body = {**self._base, "choices": [self._choice(text, finish)]}
        if self._include_usage:
            body["usage"] = None
        return sse(body)

    def usage(self, pt: int, ct: int) -> bytes | None:
        if not self._include_usage:
            return None
        return sse({**self._base, "choices": [], "usage": usage(pt, ct)})

    def _choice(self, text: str, finish: str | None) -> dict:
        raise NotImplementedError


class ChatChunks(ChunkWriter):
    object = "chat.completion.chunk"

    def first(self) -> bytes:
        """Chat streams open with the assistant role, as OpenAI's do."""
        body = {**self._base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                            "logprobs": None, "finish_reason": None}]}  # fmt: skip
        if self._include_usage:
            body["usage"] = None
        return sse(body)

    def _choice(self, text: str, finish: str | None) -> dict:
        return {"index": 0, "delta": {"content": text} if text else {}, "logprobs": None, "finish_reason": finish}


class TextChunks(ChunkWriter):
    object = "text_completion"

    def _choice(self, text: str, finish: str | None) -> dict:
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}


def embeddings(model: str, vectors: list[list[float]], encoding: str, prompt_tokens: int) -> bytes:
    if encoding == "base64":
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode(),
            }
            for i, v in enumerate(vectors)
        ]
    else:
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
    return orjson.dumps(
        {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}
    )


def model_list(names: list[str], created: int) -> bytes:
    return orjson.dumps(
        {"object": "list", "data": [{"id": n, "object": "model", "created": created, "owned_by": "foundry"} for n in names]}
    )
