"""One error model for the whole product: what every error a user can see knows about itself.

::

    FoundryError                          status, type, code, param, message; body()
    ├── serve.gateway.errors.GatewayError     /v1 (the OpenAI API)
    ├── serve.runtimes.engine.EngineError     a runtime's refusal, passed on by the gateway as is
    └── control.errors.ControlError           /api (control.kube's KubeError among them)

Each boundary extends it with its own typed family (drawn in its module) and renders it with one
handler as OpenAI does: ``{"error": {"message", "type", "param", "code"}}``. The same failure has
the same ``type`` on ``/v1`` and ``/api``:

=====  ======================  =============================================================
400    invalid_request_error   the request is wrong; ``param`` names the field
401    invalid_request_error   missing, unknown, revoked or expired credentials (as OpenAI)
403    permission_error        the caller may not do this
404    not_found_error /v1: invalid_request_error with code model_not_found, as OpenAI
409    invalid_request_error   conflicts with the current state
429    requests | tokens | insufficient_quota    which limit was hit
5xx    server_error            ours or an upstream's failure; retryable where it says so
=====  ======================  =============================================================

Messages are written for users: no traceback, no secret, no class name.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

__all__ = ["FoundryError", "error_json"]


class FoundryError(Exception):
    """Base of every error a user sees; on its own, an unexpected server error."""

    status: ClassVar[int] = 500
    type: str = "server_error"
    code: str | None = "internal_error"
    param: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if param is not None:
            self.param = param
        if code is not None:
            self.code = code

    def body(self, request_id: str | None = None) -> dict[str, Any]:
        """The OpenAI error body; with ``request_id``, the message ends with it."""
        message = self.message if request_id is None else f"{self.message} (request id: {request_id})"
        return {"error": {"message": message, "type": self.type, "param": self.param, "code": self.code}}

    def json(self) -> bytes:
        """:meth:`body` as JSON bytes (the gateway's responses and SSE error events)."""
        return error_json(self.message, self.type, self.param, self.code)


def error_json(message: str, type: str, param: str | None, code: str | None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type, "param": param, "code": code}})
