"""Server-sent events (the ``text/event-stream`` format) read from a stream of bytes.

Both OpenAI-compatible servers and Anthropic stream this way::

    event: content_block_delta
    data: {"type": "content_block_delta", ...}

    data: [DONE]

An event is the ``event:`` and ``data:`` lines before a blank line; several ``data:`` lines join
with ``\\n``; ``:`` comment lines (keep-alives), ``id:`` and ``retry:`` are ignored. Lines end with
``\\n`` or ``\\r\\n`` (a lone ``\\r`` line ending, allowed by the spec, is sent by no provider and is
not supported). The data stays ``bytes`` so that callers hand it to ``orjson.loads`` without a
decode step.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    event: str | None  # the ``event:`` field; None when the server sent only data
    data: bytes


async def iter_events(chunks: AsyncIterable[bytes]) -> AsyncIterator[ServerSentEvent]:
    """The events in ``chunks``, however the bytes are split. An event still pending when the
    stream ends is delivered too (some servers omit the final blank line)."""
    buffer = b""
    event: str | None = None
    data: list[bytes] = []
    async for chunk in chunks:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if data:
                    yield ServerSentEvent(event, b"\n".join(data))
                event, data = None, []
                continue
            field, _, value = line.partition(b":")
            if value.startswith(b" "):
                value = value[1:]
            if field == b"data":
                data.append(value)
            elif field == b"event":
                event = value.decode("utf-8", "replace")
    if buffer.rstrip(b"\r"):
        field, _, value = buffer.rstrip(b"\r").partition(b":")
        if field == b"data":
            data.append(value[1:] if value.startswith(b" ") else value)
    if data:
        yield ServerSentEvent(event, b"\n".join(data))
