"""The gateway's FastAPI app served by uvicorn in a thread, in front of real (fake) upstreams.

No Ray: outside providers need none. Keys come from an in-memory KeySource, metrics go to a
real chdb store, and the app is reached over real HTTP, as clients reach it.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path

import uvicorn

from control.config import parse_config
from serve.gateway.app import create_app
from serve.metrics import ChdbStore
from tests.fakes.keys import MemoryKeySource

KEY = "sk-fnd-gateway-test-key-0123456789abcdefghijklmnopq"


class StoreSink:
    """The MetricsClient protocol over an in-process store, on the store's own loop."""

    def __init__(self, path: Path) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.store = self._call(self._open(str(path)))

    async def _open(self, path: str):
        return ChdbStore(path)

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(60)

    async def insert(self, rows, token=None) -> None:
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self.store.insert(rows, token), self._loop))

    def rows(self, where: str = "1") -> list[dict]:
        from serve.metrics.store import TABLE

        return self.store._backend.query_rows(f"SELECT * FROM {TABLE} WHERE {where} ORDER BY ts")

    def close(self) -> None:
        self._call(self.store.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


class GatewayServer:
    def __init__(self, config_toml: str, tmp: Path, **app_args) -> None:
        cfg = parse_config(config_toml, source="<test>", base_dir=tmp)
        self.keys = MemoryKeySource()
        self.keys.add(KEY)
        self.sink = StoreSink(tmp / "metrics")
        app = create_app(
            models=dict(cfg.models),
            runtime_deployments={},
            key_source=self.keys,
            metrics=self.sink,
            settings=cfg.gateway,
            metrics_settings=cfg.metrics.model_copy(update={"flush_interval_ms": 50}),
            limits=cfg.limits,
            **app_args,
        )
        sock = self._sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_rows(self, n: int, timeout_s: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        while len(rows := self.sink.rows()) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(rows)} metrics rows, expected {n}")
            time.sleep(0.05)
        return rows

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(30)
        self._sock.close()
        self.sink.close()
