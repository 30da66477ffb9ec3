"""Errors of the control plane, each knowing how the control API reports it.

::

    ControlError                 500 server_error
    ├── InvalidRequest           400 invalid_request_error   (names the field in ``param``)
    ├── AuthenticationFailed     401 authentication_error
    ├── PermissionDenied         403 permission_error
    ├── NotFound                 404 not_found_error
    ├── Conflict                 409 invalid_request_error
    ├── DatabaseUnavailable      503 server_error
    └── MetricsUnavailable       503 server_error

The service modules (:mod:`control.keys`, :mod:`control.projects`) raise these; the app has one
handler that renders any of them as ``{"error": {"message", "type", "param", "code"}}``.
Messages are written for users: they never hold a secret, a hash or a traceback.

:class:`BootstrapError` is not an API error: it stops ``foundry up`` with a message for the
operator.
"""

from __future__ import annotations

from typing import ClassVar


class ControlError(Exception):
    """Base of every error the control API reports; on its own, an unexpected server error."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def body(self, request_id: str | None = None) -> dict:
        message = self.message if request_id is None else f"{self.message} (request id: {request_id})"
        return {"error": {"message": message, "type": self.type, "param": self.param, "code": self.code}}


class InvalidRequest(ControlError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_value"


class AuthenticationFailed(ControlError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(ControlError):
    status = 403
    type = "permission_error"
    code = "admin_key_required"


class NotFound(ControlError):
    status = 404
    type = "not_found_error"
    code = "not_found"


class Conflict(ControlError):
    status = 409
    type = "invalid_request_error"
    code = "conflict"


class DatabaseUnavailable(ControlError):
    status = 503
    type = "server_error"
    code = "database_unavailable"


class MetricsUnavailable(ControlError):
    status = 503
    type = "server_error"
    code = "metrics_unavailable"


class BootstrapError(Exception):
    """The admin key cannot be set up as asked; the message tells the operator what to change."""
