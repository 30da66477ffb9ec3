"""Errors of the control plane, each knowing how the control API reports it.

::

    ControlError                 500 server_error            (a serve.errors.FoundryError)
    ├── InvalidRequest           400 invalid_request_error   (names the field in ``param``)
    ├── AuthenticationFailed     401 invalid_request_error   (as OpenAI and /v1 answer a bad key)
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

from serve.errors import FoundryError


class ControlError(FoundryError):
    """Base of every error the control API reports; on its own, an unexpected server error."""


class InvalidRequest(ControlError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_value"


class AuthenticationFailed(ControlError):
    status = 401
    type = "invalid_request_error"
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
