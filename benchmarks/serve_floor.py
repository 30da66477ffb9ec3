"""The floor under the gateway's cost: a proxy with no gateway logic, served as the gateway is.

It reads the body, makes one aiohttp call to the upstream and answers with the upstream's bytes
(streamed or whole): no key, no validation, no routing, no metrics. It is deployed as a Ray
Serve application with the gateway's deployment options (user code on the server's loop, no
access log, the same CPUs), so a request takes the gateway's path through Serve's HAProxy and
the replica's direct ingress. ``bench_gateway_vs_litellm`` runs it as the ``floor`` target:
Foundry against it is what the gateway's own work costs; it against direct is what Serve costs.

    serve.run(build_floor("http://127.0.0.1:PORT/v1/chat/completions", num_cpus=0.5),
              name="floor", route_prefix="/floor")
"""

from __future__ import annotations

import aiohttp
from fastapi import FastAPI
from ray import serve
from ray.serve.deployment import Application
from starlette.types import ASGIApp, Receive, Scope, Send

from serve.gateway.app import REPLICA_ENV

__all__ = ["build_floor"]


class _Proxy:
    """ASGI: every HTTP request goes to ``upstream`` as it came; the answer comes back as is."""

    def __init__(self, app: ASGIApp, *, upstream: str) -> None:
        self.app = app
        self.upstream = upstream
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.session is None:
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        headers = {"content-type": "application/json"}
        async with self.session.post(self.upstream, data=b"".join(chunks), headers=headers) as answer:
            kind = answer.headers.get("content-type", "application/json").encode("latin-1")
            if not kind.startswith(b"text/event-stream"):
                body = await answer.read()
                start = [(b"content-type", kind), (b"content-length", b"%d" % len(body))]
                await send({"type": "http.response.start", "status": answer.status, "headers": start})
                await send({"type": "http.response.body", "body": body})
                return
            await send({"type": "http.response.start", "status": answer.status, "headers": [(b"content-type", kind)]})
            async for chunk in answer.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})


def build_floor(upstream: str, *, num_cpus: float) -> Application:
    def app() -> FastAPI:  # built in the replica, as the gateway's app is
        api = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
        api.add_middleware(_Proxy, upstream=upstream)
        return api

    @serve.deployment(
        name="Floor",
        ray_actor_options={"num_cpus": num_cpus, "runtime_env": {"env_vars": REPLICA_ENV}},
        max_ongoing_requests=256,
        logging_config={"enable_access_log": False},
    )
    @serve.ingress(app)
    class Floor:
        pass

    return Floor.bind()
