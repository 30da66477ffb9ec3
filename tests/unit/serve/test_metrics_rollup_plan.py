"""Which rollup answers a query, how a range rounds to whole buckets, and the SQL it reads
(no database: the equality with raw rows is in tests/integration/serve/test_metrics_rollups.py)."""

from __future__ import annotations

import doctest
from datetime import datetime, timezone

import pytest

from serve.metrics import rollups

DAY = int(datetime(2026, 11, 1, tzinfo=timezone.utc).timestamp())


@pytest.mark.parametrize(
    ("since", "until", "interval"),
    [
        (DAY, DAY + 30 * 86400, "1d"),  # a month of whole days: the daily rollup
        (DAY + 3600, DAY + 86400, "1h"),  # starts on an hour
        (DAY + 300, DAY + 3600, "5m"),
        (DAY + 17, DAY + 3600, "5m"),  # off every mark: widened to 5-minute buckets
    ],
)
def test_the_coarsest_rollup_that_fits(since, until, interval):
    assert rollups.fitting_rollup(since, until).interval == interval
    assert rollups.fitting_rollup(since, until, "key").table == f"requests_{interval}"
    assert rollups.fitting_rollup(since, until, "model").table == f"requests_{interval}_keyless"


def test_ranges_round_to_whole_buckets():
    assert rollups.floor_s(DAY + 3599, 3600) == DAY and rollups.ceil_s(DAY + 1, 3600) == DAY + 3600
    assert rollups.ceil_s(DAY, 3600) == DAY  # an aligned end stays


def test_queries_read_rollups_only_and_quote_filters():
    for interval in rollups.INTERVALS:
        for metric in rollups.METRICS:
            sql = rollups.timeseries_sql(metric, interval, since_s=DAY, until_s=DAY + 86400, group_by="key",
                                         project_id="p'1")  # fmt: skip
            assert f"FROM {rollups.ROLLUPS[interval].table}\n" in sql and "FROM requests\n" not in sql
            assert "project_id = 'p\\'1'" in sql
            by_model = rollups.timeseries_sql(metric, interval, since_s=DAY, until_s=DAY + 86400, group_by="model",
                                              project_id=None)  # fmt: skip
            assert f"FROM {rollups.KEYLESS[interval].table}\n" in by_model
    assert "quantilesTDigestIfMerge(0.5, 0.95)(latency_ms)[2]" in rollups.METRICS["latency_p95"]


def test_docstring_example():
    result = doctest.testmod(rollups)
    assert result.attempted > 0 and result.failed == 0
