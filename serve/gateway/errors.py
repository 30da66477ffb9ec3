"""Errors the gateway returns, each rendered in the OpenAI shape.

    GatewayError                      500 server_error
    ├── InvalidRequest                400 invalid_request_error  (bad JSON, bad parameters)
    ├── AuthenticationFailed          401 invalid_request_error / invalid_api_key
    ├── PermissionDenied              403 permission_error      (model not allowed for the key)
    ├── ModelNotFound                 404 invalid_request_error / model_not_found
    └── ProviderUnavailable           503 server_error          (no provider could answer)

Every error becomes ``{"error": {"message", "type", "param", "code"}}``; messages are written
for users and never contain a traceback or a secret.
"""

from __future__ import annotations

import orjson


class GatewayError(Exception):
    status_code = 500
    error_type = "server_error"
    code: str | None = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

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


class ProviderUnavailable(GatewayError):
    status_code = 503
    error_type = "server_error"
    code = "provider_unavailable"


def error_body(message: str, error_type: str, param: str | None, code: str | None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": error_type, "param": param, "code": code}})
