"""Rollups (5 min, 1 h, 1 d) on both backends: chdb in-process and clickhouse-connect over
ClickHouse's HTTP interface. A generated day of traffic (100k rows) gives the same counts from
the rollups as from the raw rows; percentiles merge quantile states; the back-fill runs once."""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import pytest_asyncio

from serve.metrics import ChdbBackend, ChdbStore, ClickHouseHTTPBackend, MetricsStore, RequestRecord
from serve.metrics.migrations import MIGRATIONS, MIGRATIONS_TABLE

DAY = datetime(2026, 11, 2, tzinfo=timezone.utc)
ROWS = 100_000
STEP_S = {"5m": 300, "1h": 3600, "1d": 86400}

pytestmark = pytest.mark.asyncio(loop_scope="module")  # one loop for the module's stores


def generated_day(n: int = ROWS, seed: int = 7) -> list[RequestRecord]:
    """A day of traffic: 5 models, 3 projects, 40 keys, 3 providers, ~4% errors, bursty hours."""
    rng = random.Random(seed)
    models = ["chat-a", "chat-b", "embed", "tiny", "big"]
    rows = []
    for i in range(n):
        hour = min(23, int(rng.triangular(0, 24, 15)))  # busier in the afternoon
        ts = DAY + timedelta(hours=hour, seconds=rng.uniform(0, 3600))
        status = rng.choices([200, 429, 500], [0.96, 0.03, 0.01])[0]
        model = rng.choice(models)
        ok = status < 400
        rows.append(RequestRecord(
            request_id=f"r{i}", ts=ts, endpoint="embeddings" if model == "embed" else "chat.completions",
            model=model, status=status, project_id=f"proj_{rng.randrange(3)}", key_id=f"key_{rng.randrange(40)}",
            provider=rng.choice(["local:tiny", "openai:gpt", "anthropic:claude"]),
            deployment=rng.choice(["", "dep-1"]),
            error_type="" if ok else "rate_limit_error",
            prompt_tokens=rng.randrange(1, 2000) if ok else 0,
            completion_tokens=rng.randrange(0, 500) if ok and model != "embed" else 0,
            ttft_ms=rng.lognormvariate(4, 0.6) if ok and model != "embed" else None,
            latency_ms=rng.lognormvariate(6, 0.8), streamed=model != "embed", attempts=1,
            cost_usd=round(rng.uniform(0, 0.01), 6) if ok else 0.0,
        ))  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def day() -> list[RequestRecord]:
    return generated_day()


def _open(kind: str, request, name: str) -> MetricsStore:
    if kind == "chdb":
        return ChdbStore(str(request.getfixturevalue("tmp_path_factory").mktemp(name)))
    return MetricsStore(ClickHouseHTTPBackend(f"{request.getfixturevalue('clickhouse_url')}/{name}"))


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["chdb", "clickhouse-http"])
async def day_store(request, day):
    """A store holding the generated day, inserted in 10 batches (so states merge across parts)."""
    store = _open(request.param, request, f"day_{request.param.replace('-', '_')}")
    for start in range(0, len(day), 10_000):
        await store.insert(day[start : start + 10_000])
    yield store
    await store.close()


def _bucket(ts: datetime, step_s: int) -> datetime:
    epoch = int(ts.timestamp()) // step_s * step_s
    return datetime.fromtimestamp(epoch, timezone.utc)


def _points(series) -> dict[tuple[str, datetime], float]:
    return {(s.group, t): v for s in series.series for t, v in s.points if v}


@pytest.mark.slow
@pytest.mark.parametrize("interval", ["5m", "1h", "1d"])
async def test_rollup_counts_equal_raw_counts(day_store, day, interval):
    step = STEP_S[interval]
    end = DAY + timedelta(days=1)
    assert await day_store.count() == ROWS
    expected: dict[tuple[str, str], Counter] = defaultdict(Counter)  # one pass over the raw rows
    for r in day:
        bucket = _bucket(r.ts, step)
        tokens, error = r.prompt_tokens + r.completion_tokens, int(r.status >= 400)
        for group_by, group in (("model", r.model), ("key", r.key_id), (None, "all")):
            expected["requests", group_by][group, bucket] += 1
            expected["errors", group_by][group, bucket] += error
            expected["tokens", group_by][group, bucket] += tokens
    for (metric, group_by), counts in expected.items():
        got = await day_store.timeseries(metric, interval, since=DAY, until=end, group_by=group_by)
        assert _points(got) == {k: v for k, v in counts.items() if v}, (metric, group_by)
        # every bucket of the day is present, empty ones as 0
        assert {len(s.points) for s in got.series} == {86400 // step}
        assert got.series[0].points[0][0] == DAY


@pytest.mark.slow
async def test_rollup_sums_filters_and_empty_buckets(day_store, day):
    cost: defaultdict[str, float] = defaultdict(float)
    for r in day:
        if r.project_id == "proj_1":
            cost[r.key_id] += r.cost_usd
    top = await day_store.top("cost", "key", since=DAY, until=DAY + timedelta(days=1), limit=5, project_id="proj_1")
    assert top.interval == "1d"  # a whole day reads the daily rollup
    expected = sorted(cost.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    assert [g for g, _ in top.data] == [g for g, _ in expected]
    assert [v for _, v in top.data] == pytest.approx([v for _, v in expected], rel=1e-9)

    # a range that runs past the day: the extra buckets are zero, not missing
    got = await day_store.timeseries("requests", "1h", since=DAY - timedelta(hours=2), until=DAY + timedelta(hours=2))
    assert [v for _, v in got.series[0].points[:2]] == [0, 0]
    assert got.series[0].points[2][1] == sum(1 for r in day if r.ts < DAY + timedelta(hours=1))
    assert got.since == DAY - timedelta(hours=2)

    deployments = await day_store.top("requests", "deployment", since=DAY, until=DAY + timedelta(days=1))
    assert dict(deployments.data) == Counter(r.deployment for r in day)


@pytest.mark.slow
async def test_percentiles_merge_quantile_states(day_store, day):
    """p95 over a day from hourly states equals the raw p95 (t-digest: within 2%); an average of
    the hourly p95s would not."""
    for model in ("chat-a", "big"):
        latencies = np.array([r.latency_ms for r in day if r.model == model and r.status < 400])
        ttfts = np.array([r.ttft_ms for r in day if r.model == model and r.status < 400])
        exact_p95, exact_ttft_p50 = np.quantile(latencies, 0.95), np.quantile(ttfts, 0.5)
        top = await day_store.top("latency_p95", "model", since=DAY, until=DAY + timedelta(hours=24), limit=10)
        assert dict(top.data)[model] == pytest.approx(exact_p95, rel=0.02)
        ttft = await day_store.top("ttft_p50", "model", since=DAY, until=DAY + timedelta(hours=24), limit=10)
        assert dict(ttft.data)[model] == pytest.approx(exact_ttft_p50, rel=0.02)
    hourly = await day_store.timeseries("latency_p95", "1h", since=DAY, until=DAY + timedelta(days=1), group_by="model")
    embed = next(s for s in hourly.series if s.group == "embed")
    assert all(v > 0 for _, v in embed.points)
    ttft = await day_store.timeseries("ttft_p95", "1d", since=DAY, until=DAY + timedelta(days=1), group_by="model")
    assert {s.group: s.points[0][1] for s in ttft.series}["embed"] == 0  # no TTFT for embeddings: 0


@pytest.mark.slow
async def test_answers_come_from_the_rollups_not_the_raw_rows(request, day):
    store = _open("chdb", request, "raw_emptied")
    await store.insert(day[:5000])
    before = await store.timeseries("requests", "5m", since=DAY, until=DAY + timedelta(days=1), group_by="model")
    store._backend.command("TRUNCATE TABLE requests")
    assert await store.count() == 0
    after = await store.timeseries("requests", "5m", since=DAY, until=DAY + timedelta(days=1), group_by="model")
    assert after == before and sum(v for s in after.series for _, v in s.points) == 5000
    await store.close()


@pytest.mark.parametrize("kind", ["chdb", "clickhouse-http"])
async def test_existing_rows_are_back_filled_once(request, kind, day):
    """A store from before the rollups (only migration 1 applied) gets its rows rolled up once."""
    name = f"backfill_{kind.replace('-', '_')}"
    if kind == "chdb":
        path = str(request.getfixturevalue("tmp_path_factory").mktemp(name))
        backend = ChdbBackend(path)
    else:
        url = f"{request.getfixturevalue('clickhouse_url')}/{name}"
        backend = ClickHouseHTTPBackend(url)
    for statement in MIGRATIONS[0].statements():  # the schema before rollups
        backend.command(statement)
    old = [r.as_dict() | {"ts": r.ts.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]} for r in day[:3000]]
    for row in old:
        del row["deployment"]  # not a column yet
    backend.insert_json_rows("requests", "\n".join(json.dumps(row) for row in old).encode())
    backend.close()

    def reopen() -> MetricsStore:
        return ChdbStore(path) if kind == "chdb" else MetricsStore(ClickHouseHTTPBackend(url))

    store = reopen()
    applied = store._backend.query_rows(f"SELECT version FROM {MIGRATIONS_TABLE} ORDER BY version")
    assert [int(r["version"]) for r in applied] == [m.version for m in MIGRATIONS]
    whole_day = {"since": DAY, "until": DAY + timedelta(days=1)}
    for interval in STEP_S:
        total = await store.timeseries("requests", interval, **whole_day)
        assert sum(v for _, v in total.series[0].points) == 3000
    await store.insert(day[3000:3500])  # new rows reach the rollups through the views
    await store.close()

    store = reopen()  # opening again neither back-fills again nor loses the view
    await store.insert(day[3500:4000])
    for interval in STEP_S:
        total = await store.timeseries("requests", interval, **whole_day)
        assert sum(v for _, v in total.series[0].points) == 4000
    await store.close()


async def test_bad_arguments_name_the_argument(tmp_path):
    store = ChdbStore(str(tmp_path / "m"))
    with pytest.raises(ValueError, match="metric: 'qps' is not one of requests"):
        await store.timeseries("qps", "1h", since=DAY, until=DAY + timedelta(hours=1))
    with pytest.raises(ValueError, match="interval: '1w'"):
        await store.timeseries("requests", "1w", since=DAY, until=DAY + timedelta(hours=1))
    with pytest.raises(ValueError, match="group_by: 'endpoint'"):
        await store.timeseries("requests", "1h", since=DAY, until=DAY + timedelta(hours=1), group_by="endpoint")
    with pytest.raises(ValueError, match="until: must be later than since"):
        await store.timeseries("requests", "1h", since=DAY, until=DAY)
    with pytest.raises(ValueError, match="interval: 17280 buckets of 5m"):
        await store.timeseries("requests", "5m", since=DAY, until=DAY + timedelta(days=60))
    with pytest.raises(ValueError, match="limit: must be between 1 and 1000"):
        await store.top("cost", "key", since=DAY, until=DAY + timedelta(days=1), limit=0)
    assert (await store.top("cost", "key", since=DAY, until=DAY + timedelta(days=1), project_id="p'--")).data == []
    await store.close()
