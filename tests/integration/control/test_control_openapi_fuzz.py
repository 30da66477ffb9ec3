"""schemathesis over the control API's OpenAPI document, as an admin and as a project member.

Every operation gets a bounded number of generated requests, valid ones (which must be accepted
or refused for a documented reason) and invalid ones (which must be refused with a 4xx), and
every response is checked against the document: status codes, headers (``Allow`` on 405),
bodies, no 5xx. Derandomized, so a run is repeatable.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from control.app import create_app
from control.config import AuthConfig
from control.db import migrate
from control.keys import bootstrap_admin
from serve.metrics.records import UsageReport
from tests.fakes.oidc import FakeIssuer

MAX_EXAMPLES = 12  # per operation, generation mode and caller: enough to find the classics, fast in CI
# Routes that need a service this test does not start, tested by their own suites: pipelines (a
# DBOS executor), analytics (the metrics store's rollups), predictions (a trained predictor).
NEEDS_SERVICES = ("/pipelines", "/analytics", "/predict")

pytestmark = pytest.mark.slow


class Usage:
    async def usage(self, *, since, until, project_id) -> UsageReport:
        return UsageReport(requests=0, errors=0, prompt_tokens=0, completion_tokens=0, cost_usd=0.0, models=[])

    async def insert_benchmarks(self, rows: list[dict]) -> int:
        return len(rows)

    async def benchmarks(self, *, model_path=None) -> list[dict]:
        return []


@contextmanager
def serving(app) -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)  # polling a condition, bounded by the deadline above
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture(scope="module")
def issuer() -> Iterator[FakeIssuer]:
    with FakeIssuer.running(seed=11) as issuer:
        yield issuer


@pytest.fixture(scope="module")
def api(issuer: FakeIssuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import asyncio

    url = f"sqlite:///{Path(tmp_path_factory.mktemp('fuzz')) / 'foundry.db'}"
    asyncio.run(migrate(url))
    admin_key = asyncio.run(bootstrap_admin(url, None))
    auth = AuthConfig(oidc_issuer=issuer.url, oidc_audience="foundry")
    with serving(create_app(database_url=url, usage=Usage(), auth=auth)) as base:
        admin = {"Authorization": f"Bearer {admin_key}"}
        assert httpx.post(f"{base}/projects", json={"name": "alpha"}, headers=admin).status_code == 201
        member = {"user": "mira@example.com", "role": "member"}
        assert httpx.post(f"{base}/projects/alpha/members", json=member, headers=admin).status_code == 201
        yield base


def _token(issuer: FakeIssuer, who: str) -> str:
    roles = ["foundry-admin"] if who == "admin" else []
    claims = issuer.claims(sub=who, email=f"{who}@example.com", roles=roles, exp=int(time.time()) + 3600)
    return issuer.sign(claims)


@pytest.mark.parametrize("who", ["admin", "mira"])
def test_schemathesis_finds_no_failures(api: str, issuer: FakeIssuer, who: str) -> None:
    schema = schemathesis.openapi.from_url(f"{api}/openapi.json")
    headers = {"Authorization": f"Bearer {_token(issuer, who)}"}
    failures: list[str] = []
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 15
    for operation in operations:
        if operation.path.startswith(NEEDS_SERVICES):
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            strategy = operation.as_strategy(generation_mode=mode)
            if mode is GenerationMode.POSITIVE:  # what OpenAPI cannot say: since before until
                strategy = strategy.filter(_window_in_order)

            @given(case=strategy)
            @settings(
                max_examples=MAX_EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def run(case) -> None:
                case.call_and_validate(base_url=api, headers=headers, timeout=30)

            try:
                run()
            except Unsatisfiable:  # nothing invalid to send (e.g. GET /health takes no input)
                continue
            except (Exception, BaseExceptionGroup) as exc:  # collect every operation's failures, report all
                failures.append(f"{operation.method.upper()} {operation.path} ({mode.value}): {exc}"[:3000])
    assert not failures, "\n\n".join(failures)


def _window_in_order(case) -> bool:
    from datetime import datetime

    query = case.query or {}
    if not isinstance(query.get("since"), str) or not isinstance(query.get("until"), str):
        return True
    try:
        return datetime.fromisoformat(query["since"]) < datetime.fromisoformat(query["until"])
    except (ValueError, TypeError):
        return True
