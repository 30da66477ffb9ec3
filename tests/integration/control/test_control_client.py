"""control.client.Foundry against a real control API (uvicorn on a free port, real database,
real chdb metrics store): typed methods, analytics into pandas, errors, credentials."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from test_admin_cli import serving

from control.app import create_app
from control.client import Foundry, FoundryAPIError, FoundryConnectionError, FoundryError, resolve_api_key
from control.keys import bootstrap_admin
from serve.metrics.records import RequestRecord
from serve.metrics.store import ChdbStore

T0 = datetime(2026, 11, 1, 10, 0, tzinfo=timezone.utc)


@pytest.fixture
async def served(database_url: str, tmp_path) -> AsyncIterator[tuple[str, str, ChdbStore]]:
    store = ChdbStore(str(tmp_path / "metrics"))
    admin_key = await bootstrap_admin(database_url, None)
    with serving(create_app(database_url=database_url, usage=store)) as api:
        yield api, admin_key, store
    await store.close()


async def test_typed_methods_and_analytics_frames(served) -> None:
    api, admin_key, store = served

    def scenario() -> None:
        with Foundry(api, admin_key) as foundry:
            assert foundry.health().status == "ok"
            assert foundry.inference_url == api.removesuffix("/api") + "/v1"
            project = foundry.create_project("team-a", budget_usd=20)
            assert project.name == "team-a" and project.budget_usd == 20
            assert "team-a" in [p.name for p in foundry.projects()]
            key = foundry.create_key("team-a", name="nb", rpm=60)
            assert key.key.startswith("sk-fnd-") and key.rpm == 60
            assert foundry.update_key(key.id, rpm=None, tpm=1000).rpm is None
            assert [k.id for k in foundry.keys(project="team-a")] == [key.id]
            assert foundry.revoke_key(key.id).revoked_at is not None
            with pytest.raises(ValueError, match="rpmm"):
                foundry.update_key(key.id, rpmm=1)  # a typo fails here, before any request
            with pytest.raises(FoundryAPIError) as err:
                foundry.update_project("nope", budget_usd=1)
            assert err.value.status == 404 and err.value.code == "project_not_found"

            rows = [
                RequestRecord(request_id=f"r{i}", ts=T0 + timedelta(minutes=10 * i), endpoint="chat.completions",
                              model=("m1", "m2")[i % 2], status=200, project_id=project.id, key_id=f"k{i % 3}",
                              latency_ms=100.0 + i, cost_usd=0.25 * (i % 3))
                for i in range(12)
            ]  # fmt: skip
            asyncio.run_coroutine_threadsafe(store.insert(rows), loop).result(30)

            series = foundry.timeseries("requests", interval="1h", since=T0, until=T0 + timedelta(hours=3), group_by="model")
            frame = series.frame()
            assert list(frame.columns) == ["m1", "m2"] and frame.index.name == "t"
            assert frame.index[0] == pd.Timestamp("2026-11-01T10:00:00Z")
            assert frame["m1"].tolist() == [3, 3, 0] and frame.to_numpy().sum() == 12
            p95 = foundry.timeseries("latency_p95", interval="1d", since="2026-11-01", until="2026-11-02").frame()
            assert p95["all"].iloc[0] == pytest.approx(111, abs=1)
            top = foundry.top("cost", by="key", limit=2, since="2026-11-01", until="2026-12-01", project="team-a")
            assert top.frame().to_dict("records") == [{"key": "k2", "cost": 2.0}, {"key": "k1", "cost": 1.0}]
            assert foundry.usage(project="team-a").requests == 12
            assert foundry.record_benchmarks([]) == 0
            with pytest.raises(FoundryAPIError, match="until must be later than since") as err:
                foundry.timeseries(since="1h", until="2h")
            assert err.value.param == "until" and err.value.type == "invalid_request_error"
        with Foundry(api, "sk-fnd-wrong") as stranger, pytest.raises(FoundryAPIError) as err:
            stranger.projects()
        assert err.value.status == 401

    loop = asyncio.get_running_loop()
    await asyncio.to_thread(scenario)


def test_credentials_and_unreachable_api(monkeypatch) -> None:
    monkeypatch.delenv("FOUNDRY_API_KEY", raising=False)
    monkeypatch.delenv("FOUNDRY_ADMIN_KEY", raising=False)
    with pytest.raises(FoundryError, match="no API key"):
        Foundry("http://127.0.0.1:9/api")
    monkeypatch.setenv("FOUNDRY_ADMIN_KEY", "sk-admin")
    assert resolve_api_key() == "sk-admin"
    monkeypatch.setenv("FOUNDRY_API_KEY", "sk-user")
    assert resolve_api_key() == "sk-user" and resolve_api_key("sk-explicit") == "sk-explicit"
    with Foundry("http://127.0.0.1:9/api", timeout_s=2) as foundry, pytest.raises(FoundryConnectionError, match="cannot reach"):
        foundry.projects()
