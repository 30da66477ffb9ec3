"""benchmarks/bench_analytics.py answers: a small month of traffic, its hourly series from the
rollups equal to the raw rows (the bench checks that itself), and every figure reported."""

from __future__ import annotations

from benchmarks.bench_analytics import QUERIES, run


def test_bench_analytics_answers(tmp_path) -> None:
    result = run(rows=20_000, days=30, repeats=1, path=str(tmp_path / "metrics"))
    counts = result["rollup_rows"]
    assert result["rows"] == 20_000 and len(counts) == 6
    assert 0 < counts["requests_1d"] < counts["requests_1h"] <= counts["requests_5m"]
    assert 0 < counts["requests_1h_keyless"] < counts["requests_1h"]  # keys are the widest dimension
    assert set(result["queries"]) == {f"{metric}_by_{by}" for metric, by in QUERIES}
    by_model = result["queries"]["requests_by_model"]
    assert by_model["series"] == 5 and by_model["points"] == 5 * 30 * 24
    assert result["queries"]["cost_by_key"]["series"] == 50
    for figures in result["queries"].values():
        assert figures["rollup_ms_best"] > 0 and figures["raw_ms_best"] > 0 and figures["raw_over_rollup"] > 0
