"""ClickHouse's HTTP interface in front of the real ClickHouse engine (chdb).

No ClickHouse server can be installed here (Debian's is too old, downloads are closed), so the
clickhouse-connect backend is tested against this: a minimal HTTP front that takes queries the
way a ClickHouse server does (``query`` parameter and/or request body, ``database``,
``default_format``, and any other parameter as a setting of that one query), runs them in chdb
and answers with the raw result bytes, or HTTP 500 with ``X-ClickHouse-Exception-Code`` on error. chdb allows one data directory per process, so it runs
as its own process:

    python -m tests.fakes.clickhouse_http --port 18123 --path /tmp/ch
"""

from __future__ import annotations

import argparse
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

_DB = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NOT_SETTINGS = {"query", "database", "default_format", "session_id", "session_timeout", "compress", "decompress",
                 "user", "password", "query_id", "session_check"}  # fmt: skip


def serve(port: int, path: str) -> None:
    from chdb import session

    engine = session.Session(path)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            if urlparse(self.path).path == "/ping":
                self._answer(200, b"Ok.\n")
            else:
                self._query(b"")

        def do_POST(self) -> None:
            self._query(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

        def _query(self, body: bytes) -> None:
            params = parse_qs(urlparse(self.path).query)
            query = params.get("query", [""])[0]
            sql = f"{query}\n{body.decode()}" if query and body else (query or body.decode())
            fmt = params.get("default_format", ["TabSeparated"])[0]
            database = params.get("database", ["default"])[0]
            if not _DB.match(database):
                self._answer(500, b"Code: 81. DB::Exception: bad database name", code=81)
                return
            settings = {k: v[0] for k, v in params.items() if k not in _NOT_SETTINGS and _DB.match(k)}
            try:
                with lock:
                    engine.query(f"USE {database}")
                    restore = _apply(engine, settings)
                    try:
                        result = engine.query(sql, fmt)
                    finally:
                        _apply(engine, restore)
            except Exception as exc:
                self._answer(500, f"Code: 62. DB::Exception: {exc}".encode(), code=62)
                return
            self._answer(200, result.bytes() if result is not None else b"")

        def _answer(self, status: int, payload: bytes, code: int | None = None) -> None:
            self.send_response(status)
            if code is not None:
                self.send_header("X-ClickHouse-Exception-Code", str(code))
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def _apply(engine, settings: dict[str, str]) -> dict[str, str]:
    """``SET`` each setting this engine knows (as a server applies a query's settings to that
    query); returns the previous values, to set back after the query."""
    previous = {}
    for name, value in settings.items():
        row = engine.query(f"SELECT value FROM system.settings WHERE name = '{name}'", "TabSeparated").bytes()
        if not row:
            continue  # a setting of a newer server; clickhouse-connect sends only known ones
        previous[name] = row.decode().strip()
        engine.query(f"SET {name} = '{value.replace(chr(39), '')}'")
    return previous


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    args = parser.parse_args()
    serve(args.port, args.path)
