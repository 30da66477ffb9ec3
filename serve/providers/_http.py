"""The HTTP side of the outside providers: one pooled client per provider, JSON requests,
event streams, and the translation of httpx exceptions and HTTP error responses into
:mod:`serve.providers.errors`.

    httpx.ConnectError / ConnectTimeout                 -> UpstreamConnectError
    httpx.RemoteProtocolError / ReadError / WriteError  -> UpstreamConnectError (before the
                                                           first byte, or mid-stream: the router
                                                           knows not to retry after a delta)
    httpx.ReadTimeout / WriteTimeout / PoolTimeout      -> UpstreamTimeout
    HTTP status >= 400                                  -> UpstreamStatus (message, type and code
                                                           from the error body, Retry-After)
    anything else unreadable                            -> UpstreamProtocolError

The aiohttp transport under the client (:mod:`serve.providers._aiohttp`) raises these same
httpx exceptions. The client has a connect timeout and no read timeout of its own: the router
bounds the time to the first token and the gaps between chunks by cancelling the stream, which
closes the upstream response (and with it the connection, as the body was not read to the end).

Credentials live only in the client's default headers. Error messages name the upstream by
scheme, host and port, never carry a header, and have the credential (and anything that looks
like a masked one, as in OpenAI's "Incorrect API key provided: sk-ab***yz") cut out of any text
the upstream echoes back.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import orjson

from serve.providers._aiohttp import AiohttpTransport
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
WRITE_TIMEOUT_S = 30.0  # sending a request body; prompts are small, a stuck socket is not
KEEPALIVE_EXPIRY_S = 30.0
DRAIN_TIMEOUT_S = 1.0
MAX_ERROR_BODY_BYTES = 64 * 1024
MAX_MESSAGE_CHARS = 500
USER_AGENT = "foundry-gateway"

_JSON_HEADERS = {"content-type": "application/json"}
_MASKED = re.compile(r"[\w-]*\*{3,}[\w-]*")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


class UpstreamClient:
    """A provider's pooled HTTP/1.1 connections to one upstream: an httpx client over one
    aiohttp session (:mod:`serve.providers._aiohttp`); ``transport`` replaces it in tests.

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
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        try:
            url = httpx.URL(base_url)
        except httpx.InvalidURL:
            url = httpx.URL()
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("base_url must be an http(s) URL with a host: http[s]://HOST[:PORT][/PATH]")
        self.provider = provider
        self.target = display_url(base_url)
        self._secret = secret or None
        self._client = httpx.AsyncClient(
            base_url=url,
            headers={"user-agent": USER_AGENT, **headers},
            params=dict(params or {}),
            timeout=httpx.Timeout(None, connect=CONNECT_TIMEOUT_S, write=WRITE_TIMEOUT_S),
            follow_redirects=False,
            transport=transport
            or AiohttpTransport(
                max_connections=max_connections,
                keepalive_expiry_s=KEEPALIVE_EXPIRY_S,
                connect_timeout_s=CONNECT_TIMEOUT_S,
                https=url.scheme == "https",
            ),
        )
        self._urls: dict[str, httpx.URL] = {}  # path -> absolute URL, query included
        self._headers = httpx.Headers(self._client.headers)
        self._headers.update(_JSON_HEADERS)
        self._extensions = {"timeout": self._client.timeout.as_dict()}

    def _request(self, path: str, body: dict[str, Any]) -> httpx.Request:
        """A JSON POST to ``path``, as ``build_request`` makes it, with the URL and headers
        merged once per path instead of per request (a few % of the replica's CPU)."""
        if self._client.cookies:  # an upstream set cookies: let httpx send them back
            return self._client.build_request("POST", path, content=orjson.dumps(body), headers=_JSON_HEADERS)
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = self._client.build_request("POST", path).url
        return httpx.Request(
            "POST", url, headers=self._headers, content=orjson.dumps(body), extensions=dict(self._extensions)
        )

    async def events(self, path: str, body: dict[str, Any]) -> AsyncIterator[ServerSentEvent]:
        """POST ``body`` and stream the server-sent events of the answer. Closing the iterator
        (or cancelling the task reading it) closes the response."""
        request = self._request(path, body)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, started=False) from None
        started = False
        try:
            if response.status_code >= 400:
                raise await self._status_error(response)
            if response.headers.get("content-type", "").startswith("application/json"):
                raise self.protocol_error("a JSON answer where an event stream was expected")
            async for event in iter_events(response.aiter_bytes()):
                started = True
                yield event
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, started=started) from None
        finally:
            await response.aclose()

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        """POST ``body`` and return the parsed JSON answer."""
        try:
            response = await self._client.send(self._request(path, body))
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, started=False) from None
        if response.status_code >= 400:
            raise await self._status_error(response)
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError(self.provider, f"{self.target} answered with a body that is not JSON") from None

    async def aclose(self) -> None:
        await self._client.aclose()

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

    async def _status_error(self, response: httpx.Response) -> UpstreamStatus:
        body = bytearray()
        try:
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) >= MAX_ERROR_BODY_BYTES:
                    break
        except httpx.HTTPError:
            pass  # the status is what matters; the body was a courtesy
        try:
            parsed: Any = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = body.decode("utf-8", "replace").strip() or response.reason_phrase
        if isinstance(parsed, dict) and "error" in parsed:
            parsed = parsed["error"]
        return self.error_from_body(
            response.status_code, parsed, retry_after_s=retry_after_s(response.headers, response.status_code)
        )

    def _transport_error(self, exc: httpx.HTTPError, *, started: bool) -> ProviderError:
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, httpx.ConnectTimeout):
            return UpstreamConnectError(
                self.provider, f"could not connect to {self.target} within {CONNECT_TIMEOUT_S:g} s"
            )
        if isinstance(exc, httpx.ConnectError):
            return UpstreamConnectError(self.provider, f"could not connect to {self.target}: {self._redact(reason)}")
        if isinstance(exc, httpx.TimeoutException):
            return UpstreamTimeout(self.provider, f"{self.target} timed out: {self._redact(reason)}")
        if isinstance(exc, httpx.TransportError) and not isinstance(exc, httpx.UnsupportedProtocol | httpx.ProxyError):
            when = "after the stream started" if started else "before answering"
            return UpstreamConnectError(self.provider, f"the connection to {self.target} dropped {when}")
        return UpstreamProtocolError(self.provider, f"{self.target}: {self._redact(reason)}")

    def _redact(self, text: str) -> str:
        if self._secret:
            text = text.replace(self._secret, "[redacted]")
        text = _MASKED.sub("[redacted]", text)
        return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


def display_url(url: str | httpx.URL) -> str:
    """``scheme://host[:port]``: where a request went, without credentials, path or query."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "<invalid URL>"
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.host}{port}"


def retry_after_s(headers: httpx.Headers, status: int) -> float | None:
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
