"""An httpx transport that sends requests over one pooled ``aiohttp.ClientSession``.

httpx stays the providers' client (its request building, its exceptions, ``MockTransport`` in
the unit tests); aiohttp does the HTTP/1.1 work underneath, for less CPU per request than
httpcore's pool (whose bookkeeping grows with the connections it holds; see the figures in
benchmarks/bench_providers.py). The session and its ``TCPConnector`` (``max_connections``
sockets, kept alive ``keepalive_expiry_s``) are made on the first request, inside the running
event loop, and closed by :meth:`AiohttpTransport.aclose`.

aiohttp's exceptions become the httpx exceptions that :mod:`serve.providers._http` translates:

    ConnectionTimeoutError                 -> httpx.ConnectTimeout
    ClientConnectorError (DNS, refused,    -> httpx.ConnectError
      TLS)
    other ServerTimeoutError               -> httpx.ReadTimeout
    ServerDisconnectedError,               -> httpx.RemoteProtocolError (the connection dropped)
      ClientPayloadError, any other
      ClientError

Their text names host and port, never a header. Bodies are passed through undecoded
(``auto_decompress=False``): httpx decodes ``content-encoding`` itself.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import aiohttp
import httpx
import yarl


class AiohttpTransport(httpx.AsyncBaseTransport):
    def __init__(
        self, *, max_connections: int, keepalive_expiry_s: float, connect_timeout_s: float, https: bool = True
    ) -> None:
        self._max_connections = max_connections
        self._keepalive_expiry_s = keepalive_expiry_s
        self._timeout = aiohttp.ClientTimeout(total=None, connect=None, sock_connect=connect_timeout_s, sock_read=None)
        self._ssl: ssl.SSLContext | bool = httpx.create_ssl_context() if https else True
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections, limit_per_host=0, keepalive_timeout=self._keepalive_expiry_s, ssl=self._ssl
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            raise_for_status=False,
        )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session or self._open()
        try:
            response = await session.request(
                request.method,
                yarl.URL(str(request.url), encoded=True),
                headers=request.headers.multi_items(),
                data=request.content,
                allow_redirects=False,
            )
        except aiohttp.ClientError as exc:
            raise _to_httpx(exc, request) from None
        return httpx.Response(
            response.status,
            headers=response.raw_headers,
            stream=_Body(response, request),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": (response.reason or "").encode("ascii", "replace")},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


class _Body(httpx.AsyncByteStream):
    """A response body read as it arrives. Closing it before its end closes the connection
    (the upstream sees the request cancelled); read to the end, the connection goes back to
    the pool."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._response.content
        try:
            while chunk := await content.readany():
                yield chunk
        except aiohttp.ClientError as exc:
            raise _to_httpx(exc, self._request) from None

    async def aclose(self) -> None:
        if self._response.content.is_eof():
            self._response.release()
        else:
            self._response.close()


def _to_httpx(exc: aiohttp.ClientError, request: httpx.Request) -> httpx.TransportError:
    message = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message, request=request)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message, request=request)
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return httpx.ReadTimeout(message, request=request)
    return httpx.RemoteProtocolError(message, request=request)
