"""A provider's HTTP/1.1 connection pool, split into a few smaller pools.

httpcore's pool re-examines every connection it holds (and polls each idle socket) whenever a
request starts or ends, so its cost per request grows with the square of the connections in
use: at 16 concurrent streams that bookkeeping was about half of a provider's CPU time. Several
small pools keep each scan short. A request goes to the pool with the fewest requests in
flight (the first on a tie), so a lightly loaded provider reuses one connection and a busy one
spreads evenly; each pool may open ``ceil(max_connections / shards)`` connections.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import cast

import httpx

SHARDS = 8


class ShardedTransport(httpx.AsyncBaseTransport):
    def __init__(
        self, *, max_connections: int, keepalive_expiry_s: float, https: bool = True, shards: int = SHARDS
    ) -> None:
        shards = max(1, min(shards, max_connections))
        per_shard = math.ceil(max_connections / shards)
        limits = httpx.Limits(
            max_connections=per_shard, max_keepalive_connections=per_shard, keepalive_expiry=keepalive_expiry_s
        )
        # One TLS context for all shards (loading the CA bundle takes tens of ms), none for http://.
        tls = httpx.create_ssl_context() if https else False
        self._pools = [
            httpx.AsyncHTTPTransport(verify=tls, limits=limits, http1=True, http2=False) for _ in range(shards)
        ]
        self.in_flight = [0] * shards

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        index = self.in_flight.index(min(self.in_flight))
        self.in_flight[index] += 1
        try:
            response = await self._pools[index].handle_async_request(request)
        except BaseException:
            self.in_flight[index] -= 1
            raise
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_Tracked(cast(httpx.AsyncByteStream, response.stream), self.in_flight, index),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()


class _Tracked(httpx.AsyncByteStream):
    """A response body that counts its request out of its pool when closed."""

    def __init__(self, stream: httpx.AsyncByteStream, in_flight: list[int], index: int) -> None:
        self._stream = stream
        self._in_flight = in_flight
        self._index: int | None = index

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        if self._index is not None:
            self._in_flight[self._index] -= 1
            self._index = None
        await self._stream.aclose()
