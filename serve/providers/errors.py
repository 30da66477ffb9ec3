"""What a provider call can fail with, as the gateway's retry and fallback logic sees it.

    ProviderError                  any failure of one attempt at one provider
    ├── UpstreamStatus             the upstream answered with an HTTP error (status, Retry-After)
    ├── UpstreamConnectError       could not connect / connection dropped before any byte
    ├── UpstreamTimeout            no first token within ttft_ms, a stall longer than total_ms
    ├── UpstreamProtocolError      the upstream answered something we cannot parse
    └── UnsupportedOperation       the provider has no such API (embeddings on Anthropic)
        └── UnsupportedParameter   nor this parameter (logit_bias on Anthropic); names it

``retryable`` decides whether the next attempt (same provider after backoff, or the next
provider) may be tried: connect errors, timeouts, 408/409/429/5xx are; other 4xx are not (the
request itself is wrong, another provider would refuse it too). Provider modules translate
aiohttp exceptions into these, in the one module that talks to upstreams (_http.py). Messages never
contain a credential.
"""

from __future__ import annotations

RETRYABLE_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))


class ProviderError(Exception):
    retryable = True

    def __init__(self, provider: str, message: str) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.message = message


class UpstreamStatus(ProviderError):
    def __init__(
        self,
        provider: str,
        status: int,
        message: str,
        *,
        retry_after_s: float | None = None,
        error_type: str | None = None,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(provider, f"HTTP {status}: {message}")
        self.status = status
        self.upstream_message = message
        self.retry_after_s = retry_after_s
        self.error_type = error_type
        self.code = code
        self.param = param
        self.retryable = status in RETRYABLE_STATUS


class UpstreamConnectError(ProviderError):
    pass


class UpstreamTimeout(ProviderError):
    pass


class UpstreamProtocolError(ProviderError):
    retryable = False


class UnsupportedOperation(ProviderError):
    """The provider cannot do this at all (e.g. embeddings on Anthropic): the request is wrong
    for this model, not the upstream unhealthy."""

    retryable = False
    code = "unsupported_operation"
    param: str | None = None


class UnsupportedParameter(UnsupportedOperation):
    """The provider has no equivalent of a parameter that would change the answer: sending the
    request without it would answer another question."""

    code = "unsupported_parameter"

    def __init__(self, provider: str, param: str, message: str) -> None:
        super().__init__(provider, message)
        self.param = param


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` (or ``retry-after-ms``-style) header value; None if absent."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime
        from datetime import datetime, timezone

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
