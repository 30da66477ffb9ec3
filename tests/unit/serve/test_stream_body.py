"""How the gateway writes a stream to its client (serve/gateway/app.py ``_stream_body``): the chunks
of one upstream read in one write, a slow client holding the reader back, a disconnect
cancelling the stream, a failing stream raised."""

from __future__ import annotations

import asyncio

import pytest

from serve.gateway.app import STREAM_BUFFER_BYTES, _stream_body


class Client:
    """The ASGI side: ``receive`` waits until the client leaves; ``send`` keeps the messages and
    can be held (a client that does not read)."""

    def __init__(self) -> None:
        self.messages: list[dict] = []
        self.left = asyncio.Event()
        self.reading = asyncio.Event()
        self.reading.set()

    async def receive(self) -> dict:
        await self.left.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        await self.reading.wait()
        if not self.left.is_set():  # a server's send to a closed connection is dropped
            self.messages.append(message)

    def leave(self) -> None:
        self.left.set()
        self.reading.set()  # a write that waited on the socket returns when it closes

    @property
    def bodies(self) -> list[bytes]:
        return [m["body"] for m in self.messages]


async def test_chunks_that_arrive_together_leave_in_one_write():
    async def stream():
        for i in range(5):  # one upstream read: no wait between these
            yield b"a%d" % i
        await asyncio.sleep(0.01)  # waiting on the upstream
        yield b"b0"
        yield b"b1"

    client = Client()
    await _stream_body(stream(), client.receive, client.send)
    # the stream had ended when its last read was sent: that write ends the body too
    assert client.bodies == [b"a0a1a2a3a4", b"b0b1"]
    assert [m["more_body"] for m in client.messages] == [True, False]


async def test_a_stream_still_open_after_its_last_bytes_ends_with_an_empty_write():
    release = asyncio.Event()

    async def stream():
        yield b"all"
        await release.wait()  # the upstream closes its body a moment later

    client = Client()
    task = asyncio.ensure_future(_stream_body(stream(), client.receive, client.send))
    while not client.messages:
        await asyncio.sleep(0.001)
    release.set()
    await asyncio.wait_for(task, 5)
    assert client.bodies == [b"all", b""]
    assert [m["more_body"] for m in client.messages] == [True, False]


async def test_a_client_that_does_not_read_holds_the_reader_back():
    produced = 0
    chunk = b"x" * 1024

    async def stream():
        nonlocal produced
        while True:
            produced += 1
            yield chunk
            await asyncio.sleep(0)

    client = Client()
    client.reading.clear()
    task = asyncio.ensure_future(_stream_body(stream(), client.receive, client.send))
    for _ in range(500):
        await asyncio.sleep(0)
    # the first write is held by the client; the reader stops once the buffer is full
    assert produced <= 2 * STREAM_BUFFER_BYTES // len(chunk) + 2
    client.leave()
    await asyncio.wait_for(task, 5)


async def test_a_client_leaving_cancels_the_stream():
    closed = asyncio.Event()

    async def stream():
        try:
            yield b"first"
            await asyncio.sleep(60)  # the upstream goes quiet
            yield b"never"
        finally:
            closed.set()

    client = Client()
    task = asyncio.ensure_future(_stream_body(stream(), client.receive, client.send))
    while not client.messages:
        await asyncio.sleep(0.001)
    client.leave()
    await asyncio.wait_for(task, 5)
    assert closed.is_set()
    assert client.bodies == [b"first"]  # and no end of the body: the connection is gone


async def test_a_failing_stream_is_raised_after_what_it_sent():
    async def stream():
        yield b"part"
        await asyncio.sleep(0)
        raise RuntimeError("stream broke")

    client = Client()
    with pytest.raises(RuntimeError, match="stream broke"):
        await _stream_body(stream(), client.receive, client.send)
    assert client.bodies == [b"part"]
