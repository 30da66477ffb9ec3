"""GET /usage over a real embedded metrics store (chdb) and a real control database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from control.app import create_app
from control.keys import bootstrap_admin
from serve.metrics.records import RequestRecord
from serve.metrics.store import ChdbStore

JAN = datetime(2025, 1, 15, 12, 0, tzinfo=timezone.utc)
FEB = datetime(2025, 2, 15, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
async def store(tmp_path) -> AsyncIterator[ChdbStore]:
    store = ChdbStore(str(tmp_path / "metrics"))
    yield store
    await store.close()


def _records(project_a: str, project_b: str) -> list[RequestRecord]:
    rows = []
    for i, latency in enumerate([10.0, 20.0, 30.0, 40.0, 50.0]):  # project a, m1, January
        rows.append(RequestRecord(
            request_id=f"a{i}", ts=JAN + timedelta(minutes=i), endpoint="chat.completions", model="m1",
            status=200, project_id=project_a, prompt_tokens=10, completion_tokens=5,
            ttft_ms=latency / 2, latency_ms=latency, streamed=True,
        ))  # fmt: skip
    rows.append(RequestRecord(
        request_id="a-err", ts=JAN, endpoint="chat.completions", model="m1", status=429,
        project_id=project_a, error_type="rate_limit_error", latency_ms=1.0,
    ))  # fmt: skip
    for i in range(3):  # project b, m2 (embeddings: no TTFT), February
        rows.append(RequestRecord(
            request_id=f"b{i}", ts=FEB, endpoint="embeddings", model="m2", status=200,
            project_id=project_b, prompt_tokens=7, latency_ms=5.0,
        ))  # fmt: skip
    return rows


async def test_usage_report_from_the_metrics_store(database_url: str, store: ChdbStore) -> None:
    admin = await bootstrap_admin(database_url, None)
    app = create_app(database_url=database_url, usage=store)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=transport, base_url="http://control", headers={"Authorization": f"Bearer {admin}"}
    ) as api:
        a = (await api.post("/projects", json={"name": "team-a"})).json()
        b = (await api.post("/projects", json={"name": "team-b"})).json()
        await store.insert(_records(a["id"], b["id"]))

        everything = (await api.get("/usage")).json()
        assert (everything["requests"], everything["errors"]) == (9, 1)
        assert (everything["prompt_tokens"], everything["completion_tokens"]) == (5 * 10 + 3 * 7, 5 * 5)
        by_model = {m["model"]: m for m in everything["models"]}
        assert set(by_model) == {"m1", "m2"}
        m1, m2 = by_model["m1"], by_model["m2"]
        assert (m1["requests"], m1["errors"]) == (6, 1)
        assert m1["latency_p50_ms"] == 30.0 and 40.0 <= m1["latency_p95_ms"] <= 50.0  # errors excluded
        assert m1["ttft_p50_ms"] == 15.0
        assert m2["ttft_p50_ms"] is None and m2["latency_p50_ms"] == 5.0

        only_b = (await api.get("/usage", params={"project": "team-b"})).json()
        assert [m["model"] for m in only_b["models"]] == ["m2"] and only_b["requests"] == 3
        by_id = (await api.get("/usage", params={"project": b["id"]})).json()
        assert by_id == only_b

        january = (await api.get("/usage", params={"since": "2025-01-01T00:00:00Z", "until": "2025-02-01"})).json()
        assert january["requests"] == 6 and [m["model"] for m in january["models"]] == ["m1"]
        assert january == (await store.usage(since=datetime(2025, 1, 1, tzinfo=timezone.utc),
                                             until=datetime(2025, 2, 1, tzinfo=timezone.utc))).as_dict()  # fmt: skip

        nothing = (await api.get("/usage", params={"since": "2030-01-01T00:00:00Z"})).json()
        assert nothing == {
        "requests": 0, "errors": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0, "models": []
    }
