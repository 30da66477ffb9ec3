"""A tiny real HTTP server that records what pipelines send it: method, path, the
``Idempotency-Key`` header, the JSON body and the time of each request.

Faults per path: ``fail_first(path, n)`` answers the first ``n`` requests with 503;
``hold(path)`` keeps requests open until ``release(path)`` (to kill a caller mid-request).

    with HttpReceiver() as rx:
        rx.fail_first("/flaky", 2)
        ... pipeline step: http_request url=rx.url + "/flaky" ...
        assert len(rx.keys("/flaky")) == 1
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOLD_TIMEOUT_S = 600


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    idempotency_key: str | None
    body: Any
    at: float


class HttpReceiver:
    def __init__(self) -> None:
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        self._failures: dict[str, int] = {}
        self._holds: dict[str, threading.Event] = {}
        self.arrived = threading.Condition(self._lock)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                path = self.path.split("?", 1)[0]
                with receiver.arrived:
                    receiver.requests.append(
                        Received(self.command, path, self.headers.get("Idempotency-Key"), body, time.time())
                    )
                    failing = receiver._failures.get(path, 0)
                    if failing:
                        receiver._failures[path] = failing - 1
                    hold = receiver._holds.get(path)
                    receiver.arrived.notify_all()
                if hold is not None:
                    hold.wait(HOLD_TIMEOUT_S)
                status = 503 if failing else 200
                payload = json.dumps({"ok": not failing, "path": path}).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the caller went away (killed mid-request)
                    pass

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> HttpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        for event in self._holds.values():
            event.set()
        self._server.shutdown()
        self._server.server_close()

    def fail_first(self, path: str, n: int) -> None:
        with self._lock:
            self._failures[path] = n

    def hold(self, path: str) -> None:
        with self._lock:
            self._holds[path] = threading.Event()

    def release(self, path: str) -> None:
        with self._lock:
            event = self._holds.pop(path, None)
        if event is not None:
            event.set()

    def received(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def keys(self, path: str) -> set[str | None]:
        return {r.idempotency_key for r in self.received(path)}

    def wait_for(self, path: str, count: int = 1, timeout_s: float = 60.0) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        with self.arrived:
            while True:
                got = [r for r in self.requests if r.path == path]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{count} request(s) to {path} did not arrive within {timeout_s}s (got {len(got)})")
                self.arrived.wait(left)
