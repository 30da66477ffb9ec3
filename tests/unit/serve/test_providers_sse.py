"""The server-sent events reader, however the network splits the bytes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from serve.providers._sse import ServerSentEvent, iter_events

STREAM = (
    b": keep-alive comment\n"
    b"event: message_start\n"
    b'data: {"type": "message_start"}\n'
    b"\n"
    b"data: first line\r\n"
    b"data:second line\r\n"
    b"id: 7\r\n"
    b"retry: 1000\r\n"
    b"\r\n"
    b"\n"
    b"data: [DONE]\n"
    b"\n"
)
EXPECTED = [
    ServerSentEvent("message_start", b'{"type": "message_start"}'),
    ServerSentEvent(None, b"first line\nsecond line"),
    ServerSentEvent(None, b"[DONE]"),
]


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def _events(data: bytes, size: int) -> list[ServerSentEvent]:
    return [event async for event in iter_events(_chunks(data, size))]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, len(STREAM)])
async def test_events_are_the_same_however_the_bytes_are_split(size):
    assert await _events(STREAM, size) == EXPECTED


async def test_a_final_event_without_its_blank_line_is_delivered():
    assert await _events(b'data: {"a": 1}\n\ndata: {"b": 2}', 4) == [
        ServerSentEvent(None, b'{"a": 1}'),
        ServerSentEvent(None, b'{"b": 2}'),
    ]


async def test_an_event_field_without_data_dispatches_nothing():
    assert await _events(b"event: ping\n\n: only a comment\n\n", 5) == []
