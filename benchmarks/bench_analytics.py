"""Analytics: a month of hourly points from the rollups, against the same query over raw rows.

    timeseries 1h x 30d   MetricsStore.timeseries on chdb (the rollup, Python bucket filling
                          included) over 30 days of generated traffic (3M requests, 5 models,
                          50 keys): requests by model, p95 latency by model, cost by key.
                          Target: under 200 ms each.
    baseline              the same buckets computed from the raw request rows (GROUP BY
                          toStartOfHour over ``requests``): what the rollups save (ratio).

Both answers are checked equal (counts exactly) before timing. Best and median of 5 runs.

    python -m benchmarks.run analytics
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from benchmarks._meta import write

ROWS = 3_000_000
DAYS = 30
REPEATS = 5
TARGET_MS = 200.0
START = datetime(2026, 10, 1, tzinfo=timezone.utc)

QUERIES = [("requests", "model"), ("latency_p95", "model"), ("cost", "key")]
RAW = {
    "requests": "toFloat64(count())",
    "latency_p95": "quantileTDigestIf(0.95)(latency_ms, status < 400)",
    "cost": "sum(cost_usd)",
}
RAW_GROUP = {"model": "model", "key": "key_id"}


def _generate_sql(rows: int, days: int) -> str:
    span_ms = days * 86_400_000
    start = START.strftime("%Y-%m-%d %H:%M:%S")
    return f"""
        INSERT INTO requests (request_id, ts, endpoint, model, status, project_id, key_id, provider,
                              error_type, prompt_tokens, completion_tokens, ttft_ms, latency_ms, streamed,
                              attempts, fallback_used, cost_usd, deployment)
        SELECT toString(number),
               toDateTime64('{start}', 3, 'UTC') + toIntervalMillisecond(intDiv(number * {span_ms}, {rows})),
               'chat.completions',
               concat('model-', toString(number % 5)),
               if(number % 29 = 0, 500, 200),
               concat('proj_', toString(intHash32(number) % 50 % 10)),
               concat('key_', toString(intHash32(number) % 50)),
               concat('provider-', toString(number % 5 % 3)),
               if(number % 29 = 0, 'server_error', ''),
               100 + number % 900, 10 + number % 300,
               if(number % 29 = 0, NULL, 20 + intHash32(number * 7) % 400),
               50 + intHash32(number * 3) % 3000,
               true, 1, false, (number % 100) / 10000.0, ''
        FROM numbers({rows})"""


def _timed(fn, repeats: int) -> tuple[list[float], object]:  # noqa: ANN001
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - started) * 1000)
    return times, result


def run(*, rows: int = ROWS, days: int = DAYS, repeats: int = REPEATS, path: str | None = None) -> dict:
    """Generate ``rows`` requests over ``days`` into a fresh chdb store and time the queries."""
    from serve.metrics import ChdbStore

    with tempfile.TemporaryDirectory(prefix="bench-analytics-") as tmp:
        store = ChdbStore(path or tmp)
        backend = store._backend  # the benchmark's own SQL: generation and the raw baseline
        loop = asyncio.new_event_loop()
        try:
            started = time.perf_counter()
            backend.command(_generate_sql(rows, days))
            insert_s = time.perf_counter() - started
            rollup_rows = {
                table: int(backend.query_rows(f"SELECT count() AS n FROM {table}")[0]["n"])
                for interval in ("5m", "1h", "1d")
                for table in (f"requests_{interval}", f"requests_{interval}_keyless")
            }
            since, until = START, START + timedelta(days=days)
            results = {}
            for metric, by in QUERIES:

                def rollup(metric: str = metric, by: str = by):  # noqa: ANN202
                    return loop.run_until_complete(
                        store.timeseries(metric, "1h", since=since, until=until, group_by=by)
                    )

                def raw(metric: str = metric, by: str = by):  # noqa: ANN202
                    return backend.query_rows(
                        f"SELECT toUnixTimestamp(toStartOfHour(ts)) AS t, {RAW_GROUP[by]} AS g, {RAW[metric]} AS v "
                        f"FROM requests WHERE ts >= toDateTime64('{since:%Y-%m-%d %H:%M:%S}', 3, 'UTC') "
                        f"AND ts < toDateTime64('{until:%Y-%m-%d %H:%M:%S}', 3, 'UTC') GROUP BY t, g"
                    )

                rollup_ms, series = _timed(rollup, repeats)
                raw_ms, raw_rows = _timed(raw, repeats)
                points = sum(len(s.points) for s in series.series)
                nonzero = {(s.group, int(t.timestamp())): v for s in series.series for t, v in s.points if v}
                if metric == "requests":  # the rollup and the raw rows agree exactly
                    expected = {(r["g"], int(r["t"])): int(float(r["v"])) for r in raw_rows}
                    if nonzero != expected:
                        raise AssertionError("requests per hour from the rollup differ from the raw rows")
                results[f"{metric}_by_{by}"] = {
                    "series": len(series.series),
                    "points": points,
                    "rollup_ms_best": round(min(rollup_ms), 2),
                    "rollup_ms_median": round(statistics.median(rollup_ms), 2),
                    "raw_ms_best": round(min(raw_ms), 2),
                    "raw_ms_median": round(statistics.median(raw_ms), 2),
                    "raw_over_rollup": round(min(raw_ms) / min(rollup_ms), 2),
                }
        finally:
            loop.run_until_complete(store.close())
            loop.close()
    return {
        "rows": rows,
        "days": days,
        "insert_s": round(insert_s, 2),
        "rollup_rows": rollup_rows,
        "queries": results,
    }


def main(out_dir: Path) -> dict:
    results = run()
    worst = max(q["rollup_ms_median"] for q in results["queries"].values())
    summary = {
        "worst_median_1h_x_30d_ms": worst,
        "target_ms": TARGET_MS,
        "meets_target": worst < TARGET_MS,
        "raw_over_rollup": {name: q["raw_over_rollup"] for name, q in results["queries"].items()},
    }
    parameters = {"rows": ROWS, "days": DAYS, "repeats": REPEATS, "queries": QUERIES, "backend": "chdb"}
    return write(out_dir, "analytics", parameters, results, summary)
