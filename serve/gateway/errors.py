"""Errors the gateway returns, each rendered in the OpenAI shape (:mod:`serve.errors`).

    GatewayError                      500 server_error
    ├── InvalidRequest                400 invalid_request_error  (bad JSON, bad parameters)
    ├── AuthenticationFailed          401 invalid_request_error / invalid_api_key
    ├── PermissionDenied              403 permission_error      (model not allowed for the key)
    ├── ModelNotFound                 404 invalid_request_error / model_not_found
    ├── PayloadTooLarge               413 invalid_request_error / request_too_large ([gateway] max_body_bytes)
    ├── RateLimited                   429 requests|tokens / rate_limit_exceeded   (rpm, tpm)
    ├── QuotaExceeded                 429 insufficient_quota / insufficient_quota (budgets)
    ├── LimitsUnavailable             503 server_error / limits_unavailable       (limit store down)
    ├── KeysUnavailable               503 server_error / keys_unavailable         (unknown key, key store down)
    ├── ProviderUnavailable           503 server_error / upstream_unreachable (no provider could answer)
    └── UpstreamError                 a provider's failure, passed on (see the table below)
        ├── UpstreamRateLimited       429 requests / rate_limit_exceeded  (its 429, Retry-After kept)
        ├── UpstreamRejected          502 server_error / upstream_rejected (it refused our credentials: 401/403/404)
        ├── UpstreamFailed            502 server_error / upstream_error    (its 5xx, or another status)
        ├── UpstreamTimedOut          504 server_error / upstream_timeout
        └── UpstreamInvalidResponse   502 server_error / upstream_protocol_error

A provider's failure that is not retried becomes one of these in :func:`from_provider_error`, by
this table (``serve.providers.errors`` names the failures)::

    UpstreamStatus 400/413/422      -> InvalidRequest           (the request is wrong there too)
    UpstreamStatus 429              -> UpstreamRateLimited
    UpstreamStatus 401/403/404      -> UpstreamRejected
    UpstreamStatus other            -> UpstreamFailed
    UnsupportedOperation            -> InvalidRequest           (code unsupported_operation, or
                                                                 unsupported_parameter with its param)
    UpstreamTimeout                 -> UpstreamTimedOut
    UpstreamProtocolError           -> UpstreamInvalidResponse
    UpstreamConnectError, others    -> ProviderUnavailable

The two 429s carry ``retry_after_s`` and ``headers`` (``Retry-After``, ``retry-after-ms`` and
the ``x-ratelimit-*`` family) that the response must send; see :mod:`serve.gateway.ratelimit`.

Every error becomes ``{"error": {"message", "type", "param", "code"}}``; messages are written
for users and never contain a traceback or a secret.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from serve.errors import FoundryError, error_json
from serve.providers.errors import (
    ProviderError,
    UnsupportedOperation,
    UpstreamProtocolError,
    UpstreamStatus,
    UpstreamTimeout,
)


class GatewayError(FoundryError):
    retry_after_s: float | None = None

    def __init__(
        self, message: str, *, param: str | None = None, code: str | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message, param=param, code=code)
        if retry_after_s is not None:
            self.retry_after_s = retry_after_s

    _extra_headers: Mapping[str, str] = {}

    @property
    def headers(self) -> dict[str, str]:
        """Response headers that go with this error (``retry-after``, ``x-ratelimit-*``)."""
        headers = dict(self._extra_headers)
        if self.retry_after_s is not None and "retry-after" not in headers:
            headers["retry-after"] = str(max(1, round(self.retry_after_s)))
        return headers



class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status = 403
    type = "permission_error"
    code = "model_not_allowed"


class ModelNotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(f"The model '{model}' does not exist or you do not have access to it.", param="model")


class PayloadTooLarge(GatewayError):
    """The body is over ``[gateway] max_body_bytes``; refused before it is read whole."""

    status = 413
    type = "invalid_request_error"
    code = "request_too_large"

    def __init__(self, limit: int, size: int | None = None) -> None:
        got = f"is {size:,} bytes" if size is not None else "exceeds it"
        super().__init__(f"The request body {got}; the limit is {limit:,} bytes.")


class RateLimited(GatewayError):
    """Over a requests- or tokens-per-minute limit. ``type`` is ``"requests"`` or
    ``"tokens"``, as OpenAI reports which limit was hit."""

    status = 429
    type = "requests"
    code = "rate_limit_exceeded"

    def __init__(
        self, message: str, *, retry_after_s: float, headers: Mapping[str, str], kind: str = "requests"
    ) -> None:
        super().__init__(message)
        self.type = kind
        self.retry_after_s = retry_after_s
        self._extra_headers = headers


class QuotaExceeded(GatewayError):
    """A token or cost budget of the key or its project is used up for the current period."""

    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"

    def __init__(self, message: str, *, retry_after_s: float, headers: Mapping[str, str]) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self._extra_headers = headers


class LimitsUnavailable(GatewayError):
    """The store of rate-limit and budget counters did not answer; limited keys are refused."""

    status = 503
    type = "server_error"
    code = "limits_unavailable"


class KeysUnavailable(GatewayError):
    """A key the cache does not hold, and the key store cannot be asked: it may be a key created
    a moment ago, so "incorrect key" (401) would be a guess."""

    status = 503
    type = "server_error"
    code = "keys_unavailable"


class ProviderUnavailable(GatewayError):
    status = 503
    type = "server_error"
    code = "provider_unavailable"


class UpstreamError(GatewayError):
    """A provider's failure, passed on to the client (the table in the module docstring)."""

    status = 502
    type = "server_error"
    code = "upstream_error"


class UpstreamRateLimited(UpstreamError):
    status = 429
    type = "requests"
    code = "rate_limit_exceeded"


class UpstreamRejected(UpstreamError):
    code = "upstream_rejected"


class UpstreamFailed(UpstreamError):
    code = "upstream_error"


class UpstreamTimedOut(UpstreamError):
    status = 504
    code = "upstream_timeout"


class UpstreamInvalidResponse(UpstreamError):
    code = "upstream_protocol_error"


def _status(exc: UpstreamStatus) -> GatewayError:
    if exc.status in (400, 413, 422):
        return InvalidRequest(exc.upstream_message, param=exc.param, code=exc.code or "invalid_request")
    if exc.status == 429:
        return UpstreamRateLimited(f"The provider is rate limiting requests: {exc.upstream_message}",
                                   retry_after_s=exc.retry_after_s)  # fmt: skip
    if exc.status in (401, 403, 404):
        return UpstreamRejected(f"The provider {exc.provider} refused the gateway's request (HTTP {exc.status}).")
    return UpstreamFailed(f"The provider {exc.provider} failed (HTTP {exc.status}).")


# provider failure -> what the client is told (the table in the module docstring)
_FROM_PROVIDER: dict[type[ProviderError], Callable[..., GatewayError]] = {
    UpstreamStatus: _status,
    UnsupportedOperation: lambda exc: InvalidRequest(
        f"The model's provider {exc.provider} cannot do this: {exc.message}", param=exc.param, code=exc.code),
    UpstreamTimeout: lambda exc: UpstreamTimedOut(f"Timed out: {exc.message}."),
    UpstreamProtocolError: lambda exc: UpstreamInvalidResponse(f"The provider {exc.provider} sent an invalid response."),
}  # fmt: skip


def from_provider_error(exc: ProviderError) -> GatewayError:
    """What the client is told about a provider failure that will not be retried."""
    for kind in type(exc).__mro__:
        if (make := _FROM_PROVIDER.get(kind)) is not None:
            return make(exc)
    return ProviderUnavailable(f"The provider {exc.provider} could not be reached.", code="upstream_unreachable")


def error_body(message: str, type: str, param: str | None, code: str | None) -> bytes:
    return error_json(message, type, param, code)
