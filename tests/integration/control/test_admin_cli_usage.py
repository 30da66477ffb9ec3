"""``foundry usage --since 24h --interval 1h [--by model]``: a time series from the rollups as a
table and sparklines, against a real control API; plain ``foundry usage`` is unchanged."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone

import pytest
from test_admin_cli import Foundry as Cli
from test_admin_cli import serving

from control.app import create_app
from control.cli.admin import sparkline
from control.keys import bootstrap_admin
from serve.metrics.records import RequestRecord
from serve.metrics.store import ChdbStore


@pytest.fixture
async def cli(database_url: str, tmp_path) -> AsyncIterator[tuple[Cli, ChdbStore]]:
    store = ChdbStore(str(tmp_path / "metrics"))
    admin_key = await bootstrap_admin(database_url, None)
    with serving(create_app(database_url=database_url, usage=store)) as api:
        yield Cli(api, admin_key), store
    await store.close()


async def test_usage_time_series(cli) -> None:
    foundry, store = cli
    hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    rows = []
    for ago, model, count in ((3, "chat-main", 4), (1, "chat-main", 8), (1, "embed", 2)):
        for i in range(count):
            rows.append(RequestRecord(
                request_id=f"{model}{ago}{i}", ts=hour - timedelta(hours=ago, minutes=-i), endpoint="chat.completions",
                model=model, status=200, prompt_tokens=10, completion_tokens=5, latency_ms=50.0 + i, cost_usd=0.01,
            ))  # fmt: skip
    await store.insert(rows)

    out = (await foundry("usage", "--since", "24h", "--interval", "1h", "--by", "model")).stdout
    assert "requests per 1h" in out and "chat-main" in out and "embed" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith(("chat-main ", "embed "))}
    assert lines["chat-main"].endswith("total 12") and lines["embed"].endswith("total 2")
    spark = lines["chat-main"].split()[1]
    assert len(spark) in (24, 25) and spark.replace("▁", "") == "▅█"  # 4 three hours ago, 8 an hour ago

    data = await foundry.json("usage", "--since", "24h", "--interval", "1h", "--by", "model")
    assert {s["group"] for s in data["series"]} == {"chat-main", "embed"} and data["interval"] == "1h"
    cost = await foundry.json("usage", "--since", "6h", "--metric", "cost")  # --metric alone: hourly, one series
    assert [s["group"] for s in cost["series"]] == ["all"]
    assert sum(p["value"] for p in cost["series"][0]["points"]) == pytest.approx(0.14)

    plain = (await foundry("usage")).stdout  # the per-model report, as before
    assert "Usage" in plain and "14 requests" in plain
    since_iso = (await foundry.json("usage", "--since", (hour - timedelta(hours=2)).isoformat()))
    assert since_iso["requests"] == 10

    bad = await foundry("usage", "--since", "yesterday", "--interval", "1h", ok=False)
    assert bad.exit_code == 1 and "--since" in bad.output and "duration like 30m, 24h, 7d" in bad.output
    wide = await foundry("usage", "--since", "60d", "--interval", "5m", ok=False)
    assert wide.exit_code == 1 and "at most 10000" in wide.output


def test_sparkline() -> None:
    assert sparkline([0, 0]) == "▁▁"
    assert sparkline([1, 2, 3, 4, 5, 6, 7, 8]) == "▂▃▄▅▅▆▇█"
    assert sparkline([]) == ""
