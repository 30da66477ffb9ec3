"""Errors the gateway returns, each rendered in the OpenAI shape.

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
    └── ProviderUnavailable           503 server_error          (no provider could answer)

The two 429s carry ``retry_after_s`` and ``headers`` (``Retry-After``, ``retry-after-ms`` and
the ``x-ratelimit-*`` family) that the response must send; see :mod:`serve.gateway.ratelimit`.

Every error becomes ``{"error": {"message", "type", "param", "code"}}``; messages are written
for users and never contain a traceback or a secret.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson


class GatewayError(Exception):
    status_code = 500
    error_type = "server_error"
    code: str | None = "internal_error"

    retry_after_s: float | None = None

    def __init__(
        self, message: str, *, param: str | None = None, code: str | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
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

    def body(self) -> bytes:
        return error_body(self.message, self.error_type, self.param, self.code)


class InvalidRequest(GatewayError):
    status_code = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class AuthenticationFailed(GatewayError):
    status_code = 401
    error_type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status_code = 403
    error_type = "permission_error"
    code = "model_not_allowed"


class ModelNotFound(GatewayError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(f"The model '{model}' does not exist or you do not have access to it.", param="model")


class PayloadTooLarge(GatewayError):
    """The body is over ``[gateway] max_body_bytes``; refused before it is read whole."""

    status_code = 413
    error_type = "invalid_request_error"
    code = "request_too_large"

    def __init__(self, limit: int, size: int | None = None) -> None:
        got = f"is {size:,} bytes" if size is not None else "exceeds it"
        super().__init__(f"The request body {got}; the limit is {limit:,} bytes.")


class RateLimited(GatewayError):
    """Over a requests- or tokens-per-minute limit. ``error_type`` is ``"requests"`` or
    ``"tokens"``, as OpenAI reports which limit was hit."""

    status_code = 429
    error_type = "requests"
    code = "rate_limit_exceeded"

    def __init__(
        self, message: str, *, retry_after_s: float, headers: Mapping[str, str], error_type: str = "requests"
    ) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.retry_after_s = retry_after_s
        self._extra_headers = headers


class QuotaExceeded(GatewayError):
    """A token or cost budget of the key or its project is used up for the current period."""

    status_code = 429
    error_type = "insufficient_quota"
    code = "insufficient_quota"

    def __init__(self, message: str, *, retry_after_s: float, headers: Mapping[str, str]) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self._extra_headers = headers


class LimitsUnavailable(GatewayError):
    """The store of rate-limit and budget counters did not answer; limited keys are refused."""

    status_code = 503
    error_type = "server_error"
    code = "limits_unavailable"


class KeysUnavailable(GatewayError):
    """A key the cache does not hold, and the key store cannot be asked: it may be a key created
    a moment ago, so "incorrect key" (401) would be a guess."""

    status_code = 503
    error_type = "server_error"
    code = "keys_unavailable"


class ProviderUnavailable(GatewayError):
    status_code = 503
    error_type = "server_error"
    code = "provider_unavailable"


def error_body(message: str, error_type: str, param: str | None, code: str | None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": error_type, "param": param, "code": code}})
