"""schemathesis over the control API's OpenAPI document, as an admin and as a project member.

Every operation gets a bounded number of generated requests, valid ones (which must be accepted
or refused for a documented reason) and invalid ones (which must be refused with a 4xx), and
every response is checked against the document: status codes, headers (``Allow`` on 405),
bodies, no 5xx. Derandomized, so a run is repeatable.

Every route is fuzzed with the services it needs, real ones: the metrics store (chdb) behind
usage, benchmarks and analytics, a pipeline engine on DBOS (SQLite) behind /pipelines, on its
own event loop as the stack's pipelines actor is, and the shipped predictor behind /predict.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from control.analytics import DEFAULT_SPAN
from control.app import create_app
from control.config import AuthConfig
from control.db import migrate
from control.keys import bootstrap_admin
from pipelines.engine import PipelineEngine
from serve.metrics.store import MAX_POINTS, ChdbStore
from tests.fakes.oidc import FakeIssuer
from tests.integration.pipelines.harness import registry

# per operation, generation mode and caller: enough to find the classics, fast in CI
# (FOUNDRY_FUZZ_EXAMPLES=500 for a deeper run by hand)
MAX_EXAMPLES = int(os.environ.get("FOUNDRY_FUZZ_EXAMPLES", "12"))
STORE_YEARS = (1900, 2299)
# Bodies whose validity JSON Schema can state only in part: the published schema gives their
# shape, and a shapely body may still be refused with a 400 naming what is wrong. A pipeline
# definition must name actions the executor knows, with their params, in an acyclic DAG whose
# templates read only the steps they depend on (test_control_pipelines_api.py tests those 400s).
# A cluster's kubeconfig must be one that reaches a cluster with KubeRay; a deployment names a
# registered model and cluster that can hold it (test_deploy_kuberay.py and the e2e deploy test
# test those refusals).
SEMANTIC_BODIES = {
    ("POST", "/pipelines"): [positive_data_acceptance],
    ("POST", "/clusters"): [positive_data_acceptance],
    ("POST", "/deployments"): [positive_data_acceptance],
    ("POST", "/deployments/render"): [positive_data_acceptance],
}

pytestmark = [
    pytest.mark.slow,
    # DBOS's queue thread (the pipeline engine) draws its polling jitter from the global `random`
    # while Hypothesis generates cases in this thread; Hypothesis takes that for a strategy using
    # `random` and fails the case as flaky. No strategy here uses it.
    pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies"),
]


class OnItsLoop:
    """A :class:`control.pipelines_api.PipelinesService` whose engine runs on an event loop of its
    own, in its own thread (DBOS launches on the loop that starts it), as the stack reaches its
    pipelines actor from the control API's loop."""

    def __init__(self, engine: PipelineEngine, loop: asyncio.AbstractEventLoop) -> None:
        self._engine = engine
        self._loop = loop

    def __getattr__(self, name: str):
        method = getattr(self._engine, name)

        async def call(*args, **kwargs):
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(method(*args, **kwargs), self._loop))

        return call


@contextmanager
def pipeline_engine(tmp: Path) -> Iterator[OnItsLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    engine = PipelineEngine(f"sqlite:///{tmp / 'pipelines.db'}", executor_id="fuzz", registry=registry())
    try:
        asyncio.run_coroutine_threadsafe(engine.start(), loop).result(120)
        yield OnItsLoop(engine, loop)
    finally:
        asyncio.run_coroutine_threadsafe(engine.stop(), loop).result(120)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


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
    tmp = Path(tmp_path_factory.mktemp("fuzz"))
    url = f"sqlite:///{tmp / 'foundry.db'}"
    asyncio.run(migrate(url))
    admin_key = asyncio.run(bootstrap_admin(url, None))
    auth = AuthConfig(oidc_issuer=issuer.url, oidc_audience="foundry")
    home = os.environ.get("FOUNDRY_HOME")
    os.environ["FOUNDRY_HOME"] = str(tmp / "home")  # /predict: the shipped predictor, no trained version
    store = ChdbStore(str(tmp / "metrics"))
    try:
        with pipeline_engine(tmp) as pipelines, serving(
            create_app(database_url=url, usage=store, auth=auth, pipelines=pipelines)
        ) as base:
            yield from _seeded(base, admin_key)
    finally:
        asyncio.run(store.close())
        if home is None:
            os.environ.pop("FOUNDRY_HOME", None)
        else:
            os.environ["FOUNDRY_HOME"] = home


def _seeded(base: str, admin_key: str) -> Iterator[str]:
    """Project alpha with mira as a member."""
    admin = {"Authorization": f"Bearer {admin_key}"}
    assert httpx.post(f"{base}/projects", json={"name": "alpha"}, headers=admin).status_code == 201
    member = {"user": "mira@example.com", "role": "member"}
    assert httpx.post(f"{base}/projects/alpha/members", json=member, headers=admin).status_code == 201
    yield base


def _token(issuer: FakeIssuer, who: str) -> str:
    roles = ["foundry-admin"] if who == "admin" else []
    claims = issuer.claims(sub=who, email=f"{who}@example.com", roles=roles, exp=int(time.time()) + 3600)
    return issuer.sign(claims)


def _sendable_query(case) -> bool:
    """Whether the query goes out as generated: a parameter with an empty name, or an empty list or
    object, is not sent at all, and a list of one item is sent as that item (``?model_path=0.0``
    for ``["0.0"]``), which a string parameter rightly takes."""
    query = case.query if isinstance(case.query, dict) else {}
    return "" not in query and not any(
        (isinstance(v, dict) and not v) or (isinstance(v, list) and len(v) <= 1) for v in query.values()
    )


@pytest.mark.parametrize("who", ["admin", "mira"])
def test_schemathesis_finds_no_failures(api: str, issuer: FakeIssuer, who: str) -> None:
    schema = schemathesis.openapi.from_url(f"{api}/openapi.json")
    headers = {"Authorization": f"Bearer {_token(issuer, who)}"}
    failures: list[str] = []
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 15
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            strategy = operation.as_strategy(generation_mode=mode)
            if mode is GenerationMode.POSITIVE:  # what OpenAPI cannot say: since before until, ...
                strategy = strategy.filter(_window_in_order).filter(_answerable_window).filter(_expiry_ahead)
            else:
                strategy = strategy.filter(_sendable_query)
            excluded = SEMANTIC_BODIES.get((operation.method.upper(), operation.path), [])

            @given(case=strategy)
            @settings(
                max_examples=MAX_EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def run(case) -> None:
                case.call_and_validate(base_url=api, headers=headers, timeout=30, excluded_checks=excluded)

            try:
                run()
            except Unsatisfiable:  # nothing invalid to send (e.g. GET /health takes no input)
                continue
            except (Exception, BaseExceptionGroup) as exc:  # collect every operation's failures, report all
                failures.append(f"{operation.method.upper()} {operation.path} ({mode.value}): {_described(exc)}"[:4000])
    assert not failures, "\n\n".join(failures)


def _described(exc: BaseException) -> str:
    """An exception with every sub-exception (Hypothesis's "unreliable results" hides the failure
    it saw first in one)."""
    text = str(exc)
    for sub in getattr(exc, "exceptions", ()):
        text += "\n  - " + _described(sub).replace("\n", "\n    ")
    return text


def _answerable_window(case) -> bool:
    """Analytics over a window that is in order once the route's defaults are filled in, between
    the years the metrics store holds (ClickHouse's DateTime64: 1900-2299), and a time series of
    at most MAX_POINTS buckets."""
    if not case.operation.path.startswith("/analytics"):
        return True
    query = case.query or {}
    try:
        until = _utc(query["until"]) if isinstance(query.get("until"), str) else datetime.now(timezone.utc)
        if isinstance(query.get("since"), str):
            since = _utc(query["since"])
        elif case.operation.path == "/analytics/timeseries":
            since = until - DEFAULT_SPAN[query.get("interval", "1h")]
        else:  # /analytics/top: the month of until
            since = (until - timedelta(microseconds=1)).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    except (ValueError, TypeError, KeyError, OverflowError):
        return True  # a value the route refuses: not a window to answer
    if not (since < until and STORE_YEARS[0] <= since.year and until.year <= STORE_YEARS[1]):
        return False
    if case.operation.path == "/analytics/timeseries":
        step = {"5m": 300, "1h": 3600, "1d": 86400}[query.get("interval", "1h")]
        return (until - since).total_seconds() / step <= MAX_POINTS
    return True


def _expiry_ahead(case) -> bool:
    """A key's ``expires_at`` lies in the future (the API refuses a key that expired already)."""
    body = case.body if isinstance(case.body, dict) else {}
    if case.operation.path != "/keys" or not isinstance(body.get("expires_at"), str):
        return True
    try:
        return _utc(body["expires_at"]) > datetime.now(timezone.utc) + timedelta(minutes=5)
    except (ValueError, OverflowError):
        return True


def _utc(text: str) -> datetime:
    when = datetime.fromisoformat(text)
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)


def _window_in_order(case) -> bool:
    query = case.query or {}
    if not isinstance(query.get("since"), str) or not isinstance(query.get("until"), str):
        return True
    try:
        return datetime.fromisoformat(query["since"]) < datetime.fromisoformat(query["until"])
    except (ValueError, TypeError):
        return True
