"""Request ids: the client's ``x-request-id`` when it is a safe token, else a fresh one, sent
back in one ``x-request-id`` header.

Ray Serve's ingress does half of this for every app behind it: it keeps the client's
``x-request-id`` (whatever it holds) or makes a UUID, writes it into the request's headers and
adds it to the response. An app behind Serve therefore takes its id from the request and does
not add the header again (a client would read two as ``"a, b"``); an app served without Serve
(tests, ``uvicorn`` directly) adds it itself::

    client ── x-request-id: abc ──► Serve ingress ──► app: id "abc"       response: x-request-id: abc
    client ── (none) ─────────────► Serve ingress ──► app: id <Serve's>   response: x-request-id: <Serve's>
    client ── (none) ─────────────────────────────► app: id <its own>     response: x-request-id: <its own>

A client's id that is not a safe token (``[A-Za-z0-9._-]``, at most 64) is not stored or logged;
the app uses an id of its own (behind Serve the response then carries the client's value, as
Serve echoes it).
"""

from __future__ import annotations

import re
import uuid

__all__ = ["HEADER", "given_request_id", "new_request_id"]

HEADER = b"x-request-id"
_SAFE = re.compile(rb"[A-Za-z0-9._-]{1,64}")


def given_request_id(value: bytes | None) -> str | None:
    """The request's ``x-request-id`` (raw header value) when it is a safe token, else None."""
    if value is not None and _SAFE.fullmatch(value):
        return value.decode("ascii")
    return None


def new_request_id() -> str:
    return uuid.uuid4().hex
