"""The error tree renders OpenAI's error shape."""

from __future__ import annotations

import pytest

from control.errors import (
    AuthenticationFailed,
    Conflict,
    ControlError,
    DatabaseUnavailable,
    InvalidRequest,
    MetricsUnavailable,
    NotFound,
    PermissionDenied,
)


@pytest.mark.parametrize(
    ("error", "status", "type_"),
    [
        (InvalidRequest, 400, "invalid_request_error"),
        (AuthenticationFailed, 401, "invalid_request_error"),
        (PermissionDenied, 403, "permission_error"),
        (NotFound, 404, "not_found_error"),
        (Conflict, 409, "invalid_request_error"),
        (DatabaseUnavailable, 503, "server_error"),
        (MetricsUnavailable, 503, "server_error"),
        (ControlError, 500, "server_error"),
    ],
)
def test_each_error_knows_its_status_and_type(error: type[ControlError], status: int, type_: str) -> None:
    exc = error("something went wrong", param="rpm")
    assert exc.status == status
    body = exc.body()
    assert body == {"error": {"message": "something went wrong", "type": type_, "param": "rpm", "code": exc.code}}
    assert isinstance(exc.code, str) and exc.code


def test_code_can_be_refined_per_instance_without_changing_the_class() -> None:
    assert NotFound("x", code="key_not_found").code == "key_not_found"
    assert NotFound("x").code == "not_found"


def test_request_id_is_appended_to_the_message() -> None:
    body = InvalidRequest("rpm must be positive").body("req_123")
    assert body["error"]["message"] == "rpm must be positive (request id: req_123)"
