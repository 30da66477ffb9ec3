"""GET /analytics/timeseries and /analytics/top over a real embedded metrics store (chdb, its
rollups) and a real control database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from control.app import create_app
from control.keys import bootstrap_admin
from serve.metrics.records import RequestRecord
from serve.metrics.store import ChdbStore

T0 = datetime(2026, 11, 1, 10, 0, tzinfo=timezone.utc)


@pytest.fixture
async def store(tmp_path) -> AsyncIterator[ChdbStore]:
    store = ChdbStore(str(tmp_path / "metrics"))
    yield store
    await store.close()


@pytest.fixture
async def api(database_url: str, store: ChdbStore) -> AsyncIterator[httpx.AsyncClient]:
    admin = await bootstrap_admin(database_url, None)
    app = create_app(database_url=database_url, usage=store)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://control", headers={"Authorization": f"Bearer {admin}"}
    ) as client:
        yield client


def _rec(i: int, minutes: float, **kw) -> RequestRecord:
    base = dict(
        request_id=f"r{i}", ts=T0 + timedelta(minutes=minutes), endpoint="chat.completions", model="m1",
        status=200, project_id="", key_id="key_a", provider="local:m1", prompt_tokens=10, completion_tokens=5,
        ttft_ms=10.0, latency_ms=100.0, cost_usd=0.5,
    )  # fmt: skip
    return RequestRecord(**{**base, **kw})


async def test_timeseries_and_top(api: httpx.AsyncClient, store: ChdbStore) -> None:
    a = (await api.post("/projects", json={"name": "team-a"})).json()
    b = (await api.post("/projects", json={"name": "team-b"})).json()
    rows = [_rec(i, i, project_id=a["id"], latency_ms=float(100 + i)) for i in range(20)]  # 10:00-10:19, m1
    rows += [_rec(100 + i, 130 + i, model="m2", project_id=b["id"], key_id="key_b", cost_usd=2.0) for i in range(3)]
    rows += [_rec(200, 5, status=500, project_id=a["id"], error_type="server_error", ttft_ms=None, latency_ms=9e5)]
    await store.insert(rows)

    r = await api.get("/analytics/timeseries", params={
        "metric": "requests", "interval": "1h", "since": "2026-11-01T09:30:00Z", "until": "2026-11-01T13:00:00Z",
        "group_by": "model",
    })  # fmt: skip
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["interval"] == "1h" and body["metric"] == "requests"
    assert body["since"] == "2026-11-01T09:00:00Z" and body["until"] == "2026-11-01T13:00:00Z"  # whole buckets
    series = {s["group"]: s["points"] for s in body["series"]}
    assert series["m1"] == [
        {"t": "2026-11-01T09:00:00Z", "value": 0},
        {"t": "2026-11-01T10:00:00Z", "value": 21},
        {"t": "2026-11-01T11:00:00Z", "value": 0},
        {"t": "2026-11-01T12:00:00Z", "value": 0},
    ]
    assert [p["value"] for p in series["m2"]] == [0, 0, 0, 3]

    window = {"since": "2026-11-01T10:00:00Z", "until": "2026-11-01T10:20:00Z"}
    p95 = (await api.get("/analytics/timeseries", params={"metric": "latency_p95", "interval": "5m", **window})).json()
    values = [p["value"] for p in p95["series"][0]["points"]]
    assert p95["series"][0]["group"] == "all" and len(values) == 4
    assert values == pytest.approx([104, 109, 114, 119], abs=0.6)  # the error's latency is left out
    errors = (await api.get("/analytics/timeseries", params={"metric": "errors", "interval": "5m", **window})).json()
    assert [p["value"] for p in errors["series"][0]["points"]] == [0, 1, 0, 0]

    only_b = (await api.get("/analytics/timeseries", params={
        "metric": "cost", "interval": "1d", "since": "2026-11-01", "until": "2026-11-02", "project": "team-b",
        "group_by": "key",
    })).json()  # fmt: skip
    assert only_b["series"] == [{"group": "key_b", "points": [{"t": "2026-11-01T00:00:00Z", "value": 6.0}]}]

    top = (await api.get("/analytics/top", params={
        "metric": "cost", "by": "key", "limit": 5, "since": "2026-11-01", "until": "2026-12-01",
    })).json()  # fmt: skip
    assert top["interval"] == "1d" and top["by"] == "key"
    assert top["data"] == [{"group": "key_a", "value": 10.5}, {"group": "key_b", "value": 6.0}]
    tokens = (await api.get("/analytics/top", params={"metric": "tokens", "by": "project", "limit": 1,
                                                      "since": "2026-11-01T10:00:00Z", "until": "2026-11-01T11:00:00Z"})).json()  # fmt: skip
    assert tokens["interval"] == "1h" and tokens["data"] == [{"group": a["id"], "value": 21 * 15}]

    this_month = (await api.get("/analytics/top")).json()  # defaults: cost by key, this calendar month
    assert (this_month["metric"], this_month["by"]) == ("cost", "key")
    assert datetime.fromisoformat(this_month["since"]).day == 1


@pytest.mark.parametrize(
    ("params", "param", "fragment"),
    [
        ({"metric": "qps"}, "metric", "Input should be"),
        ({"interval": "1w"}, "interval", "Input should be"),
        ({"group_by": "endpoint"}, "group_by", "Input should be"),
        ({"since": "2026-11-02", "until": "2026-11-01"}, "until", "until must be later than since"),
        ({"interval": "5m", "since": "2026-09-01", "until": "2026-11-01"}, "interval", "buckets of 5m"),
        ({"since": "yesterday"}, "since", "datetime"),
    ],
)
async def test_bad_timeseries_requests_are_400_naming_the_field(api, params, param, fragment) -> None:
    r = await api.get("/analytics/timeseries", params=params)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and fragment in error["message"]
    assert error["type"] == "invalid_request_error"


async def test_top_errors_and_auth(api: httpx.AsyncClient) -> None:
    r = await api.get("/analytics/top", params={"limit": 0})
    assert r.status_code == 400 and r.json()["error"]["param"] == "limit"
    r = await api.get("/analytics/top", params={"project": "nope"})
    assert r.status_code == 404 and r.json()["error"]["param"] == "project"
    anonymous = await api.get("/analytics/top", headers={"Authorization": ""})
    assert anonymous.status_code == 401
    created = (await api.post("/keys", json={"project": "team-c"})).json()
    member = await api.get("/analytics/timeseries", headers={"Authorization": f"Bearer {created['key']}"})
    assert member.status_code == 403


async def test_top_with_only_until_ranks_the_month_of_until(api: httpx.AsyncClient, store: ChdbStore) -> None:
    october = -60 * 24 * 10  # minutes from T0 (2026-11-01T10:00Z): 2026-10-22
    await store.insert([_rec(i, october + i) for i in range(3)] + [_rec(10, 5, model="m2")])
    for until in ("2026-10-25T00:00:00Z", "2026-11-01T00:00:00Z"):  # until is exclusive: October both times
        r = await api.get("/analytics/top", params={"metric": "requests", "by": "model", "until": until})
        assert r.status_code == 200, r.text
        assert r.json()["since"] == "2026-10-01T00:00:00Z" and r.json()["data"] == [{"group": "m1", "value": 3}]
