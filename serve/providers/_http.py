"""The HTTP side of the outside providers: one pooled aiohttp session per provider, JSON
requests, event streams, and the translation of aiohttp's exceptions and HTTP error responses
into :mod:`serve.providers.errors`.

    aiohttp.ConnectionTimeoutError                      -> UpstreamConnectError (not within
                                                           CONNECT_TIMEOUT_S)
    aiohttp.ClientConnectorError (DNS, refused, TLS)    -> UpstreamConnectError
    aiohttp.ServerTimeoutError (any other timeout)      -> UpstreamTimeout
    ServerDisconnectedError, ClientPayloadError, any    -> UpstreamConnectError (before the
      other aiohttp.ClientError                            first byte, or mid-stream: the router
                                                           knows not to retry after a delta)
    HTTP status >= 400                                  -> UpstreamStatus (message, type and code
                                                           from the error body, Retry-After)
    anything else unreadable                            -> UpstreamProtocolError

aiohttp directly, not under httpx: on the gateway's hot path, httpx's request and response
objects over an aiohttp transport cost ~170 us of CPU per non-streamed call on top of aiohttp's
own ~290 (measured side by side against the 5 ms mock upstream). The
session and its ``TCPConnector`` (``max_connections`` sockets, kept alive
``KEEPALIVE_EXPIRY_S``) are made on the first request, inside the running event loop, and
closed by :meth:`UpstreamClient.aclose`. Cookies an upstream sets are sent back to it. The
client has a connect timeout and no read timeout of its own: the router bounds the time to the
first token and the gaps between chunks by cancelling the stream, which closes the upstream
response (and with it the connection, as the body was not read to the end).

Credentials live only in the client's default headers. Error messages name the upstream by
scheme, host and port, never carry a header, and have the credential (and anything that looks
like a masked one, as in OpenAI's "Incorrect API key provided: sk-ab***yz") cut out of any text
the upstream echoes back.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
import orjson
import yarl

from serve.providers._sse import ServerSentEvent, iter_events
from serve.providers.errors import (
    ProviderError,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamStatus,
    UpstreamTimeout,
    parse_retry_after,
)

CONNECT_TIMEOUT_S = 5.0
KEEPALIVE_EXPIRY_S = 30.0
DRAIN_TIMEOUT_S = 1.0
MAX_ERROR_BODY_BYTES = 64 * 1024
MAX_MESSAGE_CHARS = 500
USER_AGENT = "foundry-gateway"

_MASKED = re.compile(r"[\w-]*\*{3,}[\w-]*")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


class UpstreamClient:
    """A provider's pooled HTTP/1.1 connections to one upstream.

    ``headers`` (the credential among them) go on every request; ``params`` (Azure's
    ``api-version``) on every URL. ``secret`` is cut out of error messages.
    """

    def __init__(
        self,
        provider: str,
        base_url: str,
        *,
        headers: Mapping[str, str],
        max_connections: int,
        params: Mapping[str, str] | None = None,
        secret: str | None = None,
    ) -> None:
        try:
            parts = urlsplit(base_url)
            host = parts.hostname
        except ValueError:
            parts, host = None, None
        if parts is None or parts.scheme not in ("http", "https") or not host:
            raise ValueError("base_url must be an http(s) URL with a host: http[s]://HOST[:PORT][/PATH]")
        self.provider = provider
        self.target = display_url(base_url)
        self._secret = secret or None
        self._base = base_url.split("?", 1)[0].split("#", 1)[0].rstrip("/")
        self._query = urlencode(dict(params or {}))
        self._headers = {"user-agent": USER_AGENT, **headers, "content-type": "application/json"}
        self._urls: dict[str, yarl.URL] = {}  # path -> absolute URL, query included
        self._max_connections = max_connections
        self._https = parts.scheme == "https"
        self._session: aiohttp.ClientSession | None = None

    def _url(self, path: str) -> yarl.URL:
        """``path`` below the base URL (``/v1`` + ``/chat/completions``), with the params."""
        url = self._urls.get(path)
        if url is None:
            text = f"{self._base}/{path.lstrip('/')}" + (f"?{self._query}" if self._query else "")
            url = self._urls[path] = yarl.URL(text)
        return url

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            limit_per_host=0,
            keepalive_timeout=KEEPALIVE_EXPIRY_S,
            ssl=ssl.create_default_context() if self._https else True,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None, connect=None, sock_connect=CONNECT_TIMEOUT_S, sock_read=None),
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            raise_for_status=False,
        )
        return self._session

    async def _send(self, path: str, body: dict[str, Any]) -> aiohttp.ClientResponse:
        session = self._session or self._open()
        try:
            return await session.post(
                self._url(path), data=orjson.dumps(body), headers=self._headers, allow_redirects=False
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self.transport_error(exc, started=False) from None

    async def events(self, path: str, body: dict[str, Any]) -> AsyncIterator[ServerSentEvent]:
        """POST ``body`` and stream the server-sent events of the answer. Closing the iterator
        (or cancelling the task reading it) closes the response: read to its end, its connection
        goes back to the pool; cut short, the connection closes (the upstream sees the request
        cancelled)."""
        response = await self._send(path, body)
        started = False
        try:
            if response.status >= 400:
                raise await self._status_error(response)
            if response.headers.get("content-type", "").startswith("application/json"):
                raise self.protocol_error("a JSON answer where an event stream was expected")
            async for event in iter_events(response.content.iter_any()):
                started = True
                yield event
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self.transport_error(exc, started=started) from None
        finally:
            if response.content.is_eof():
                response.release()
            else:
                response.close()

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        """POST ``body`` and return the parsed JSON answer."""
        response = await self._send(path, body)
        try:
            if response.status >= 400:
                raise await self._status_error(response)
            content = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self.transport_error(exc, started=False) from None
        finally:
            response.release()  # read to its end it goes back to the pool; else aiohttp closes it
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError(self.provider, f"{self.target} answered with a body that is not JSON") from None

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
            await asyncio.sleep(0)  # the sockets close on the loop's next turn (aiohttp's advice)

    @staticmethod
    async def drain(events: AsyncIterator[ServerSentEvent]) -> None:
        """Read what follows a stream's last event (the end of the chunked body) so that its
        connection goes back to the pool: a response closed before its end closes the
        connection, and the next request would pay for a new one (a TLS handshake, upstream).
        Gives up after DRAIN_TIMEOUT_S on a server that keeps the body open."""
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT_S):
                async for _ in events:
                    pass
        except (TimeoutError, ProviderError):
            pass

    def protocol_error(self, what: str) -> UpstreamProtocolError:
        return UpstreamProtocolError(self.provider, f"{self.target} sent {what}")

    def error_from_body(self, status: int, error: Any, *, retry_after_s: float | None = None) -> UpstreamStatus:
        """An :class:`UpstreamStatus` from an error object (``{"message", "type", "code"}``,
        OpenAI's and Anthropic's shape), for an HTTP error body or an error inside a stream."""
        message, error_type, code, param = _error_fields(error)
        if status == 401:
            # 401 messages are about the key and some echo part of it: say it in our words.
            message = "the upstream rejected the API key (HTTP 401)"
        return UpstreamStatus(
            self.provider,
            status,
            self._redact(message or f"HTTP {status}"),
            retry_after_s=retry_after_s,
            error_type=error_type,
            code=code,
            param=param,
        )

    async def _status_error(self, response: aiohttp.ClientResponse) -> UpstreamStatus:
        body = bytearray()
        try:
            async for chunk in response.content.iter_any():
                body += chunk
                if len(body) >= MAX_ERROR_BODY_BYTES:
                    break
        except (aiohttp.ClientError, TimeoutError):
            pass  # the status is what matters; the body was a courtesy
        try:
            parsed: Any = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = body.decode("utf-8", "replace").strip() or response.reason or ""
        if isinstance(parsed, dict) and "error" in parsed:
            parsed = parsed["error"]
        return self.error_from_body(
            response.status, parsed, retry_after_s=retry_after_s(response.headers, response.status)
        )

    def transport_error(self, exc: aiohttp.ClientError | TimeoutError, *, started: bool) -> ProviderError:
        """The one translation of aiohttp's exceptions (the table in the module docstring)."""
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return UpstreamConnectError(
                self.provider, f"could not connect to {self.target} within {CONNECT_TIMEOUT_S:g} s"
            )
        if isinstance(exc, aiohttp.ClientConnectorError):
            return UpstreamConnectError(self.provider, f"could not connect to {self.target}: {self._redact(reason)}")
        if isinstance(exc, TimeoutError):  # ServerTimeoutError is one too
            return UpstreamTimeout(self.provider, f"{self.target} timed out: {self._redact(reason)}")
        when = "after the stream started" if started else "before answering"
        return UpstreamConnectError(self.provider, f"the connection to {self.target} dropped {when}")

    def _redact(self, text: str) -> str:
        if self._secret:
            text = text.replace(self._secret, "[redacted]")
        text = _MASKED.sub("[redacted]", text)
        return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


def display_url(url: str) -> str:
    """``scheme://host[:port]``: where a request went, without credentials, path or query."""
    try:
        parts = urlsplit(str(url))
        host, port = parts.hostname, parts.port
    except ValueError:
        return "<invalid URL>"
    if not parts.scheme or not host:
        return "<invalid URL>"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def retry_after_s(headers: Mapping[str, str], status: int) -> float | None:
    """How long the upstream asks us to wait: ``retry-after-ms`` (OpenAI, Azure), then
    ``Retry-After`` (seconds or an HTTP date); on a 429 without either, the reset time of the
    exhausted ``x-ratelimit-*`` window (OpenAI's ``6m0s`` durations, or seconds)."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    seconds = parse_retry_after(headers.get("retry-after"))
    if seconds is not None or status != 429:
        return seconds
    windows: list[tuple[bool, float]] = []
    for suffix in ("-requests", "-tokens", ""):
        reset = _duration_s(headers.get(f"x-ratelimit-reset{suffix}"))
        if reset is not None:
            windows.append((headers.get(f"x-ratelimit-remaining{suffix}") == "0", reset))
    exhausted = [reset for is_exhausted, reset in windows if is_exhausted]
    if exhausted:
        return max(exhausted)
    return min((reset for _, reset in windows), default=None)


def _duration_s(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(number + unit for number, unit in parts) != value:
        return None
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(number) * scale[unit] for number, unit in parts)


def _error_fields(error: Any) -> tuple[str | None, str | None, str | None, str | None]:
    """(message, type, code, param) of an error object; tolerant of servers that send a bare
    string or FastAPI's ``{"detail": ...}``."""
    if isinstance(error, str):
        return error, None, None, None
    if not isinstance(error, dict):
        return None, None, None, None
    message = error.get("message", error.get("detail"))
    if message is not None and not isinstance(message, str):
        message = orjson.dumps(message).decode()
    return message, _str_or_none(error.get("type")), _str_or_none(error.get("code")), _str_or_none(error.get("param"))


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)
