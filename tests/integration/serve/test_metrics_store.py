"""The metrics store on both backends: chdb in-process, and clickhouse-connect over ClickHouse's
HTTP interface (the ``clickhouse_url`` fixture: tests/fakes/clickhouse_http.py, the real engine in a
process of its own); and the batching recorder."""

from __future__ import annotations

import asyncio
import socket
import threading
from datetime import datetime, timedelta, timezone

import pytest

from serve.metrics import ChdbBackend, ChdbStore, ClickHouseHTTPBackend, MetricsBackendError, MetricsRecorder, MetricsStore, RequestRecord

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)


def rec(i: int, **kw) -> RequestRecord:
    base = dict(
        request_id=f"r{i}",
        ts=NOW + timedelta(seconds=i),
        endpoint="chat.completions",
        model="m",
        status=200,
        project_id="p1",
        prompt_tokens=10,
        completion_tokens=5,
        ttft_ms=float(i),
        latency_ms=float(10 * i),
    )
    return RequestRecord(**{**base, **kw})


@pytest.fixture(params=["chdb", "clickhouse-http"])
async def store(request, tmp_path):
    if request.param == "chdb":
        s = ChdbStore(str(tmp_path / "metrics"))
    else:  # a database of its own per test
        url = request.getfixturevalue("clickhouse_url")
        s = MetricsStore(ClickHouseHTTPBackend(f"{url}/t{abs(hash(request.node.nodeid)) % 10**9}"))
    yield s
    await s.close()


async def test_usage_report(store):
    rows = [rec(i) for i in range(1, 101)]
    rows += [rec(200 + i, status=401, error_type="invalid_request_error", ttft_ms=None, prompt_tokens=0, completion_tokens=0) for i in range(3)]
    rows += [rec(300, model="e", endpoint="embeddings", ttft_ms=None, completion_tokens=0)]
    await store.insert(rows)
    report = await store.usage()
    assert report.requests == 104 and report.errors == 3
    m = next(x for x in report.models if x.model == "m")
    assert (m.requests, m.errors, m.prompt_tokens, m.completion_tokens) == (103, 3, 1000, 500)
    assert m.latency_p50_ms == pytest.approx(505, abs=10)  # errors excluded from latency
    assert m.latency_p95_ms == pytest.approx(950, abs=10)
    assert m.ttft_p50_ms == pytest.approx(50.5, abs=1)
    e = next(x for x in report.models if x.model == "e")
    assert e.ttft_p50_ms is None and e.latency_p50_ms == 3000


async def test_usage_filters(store):
    await store.insert([rec(i) for i in range(10)] + [rec(100 + i, project_id="p2") for i in range(4)])
    assert (await store.usage(project_id="p2")).requests == 4
    assert (await store.usage(project_id="p'); DROP TABLE requests; --")).requests == 0
    assert (await store.usage(since=NOW + timedelta(seconds=5), until=NOW + timedelta(seconds=8))).requests == 3
    assert await store.count() == 14
    # bounds beyond what a DateTime64 holds (1900-2299) mean its ends, not an error
    far = (datetime(251, 12, 11, tzinfo=timezone.utc), datetime(9999, 1, 1, tzinfo=timezone.utc))
    assert (await store.usage(since=far[0], until=far[1])).requests == 14


async def test_data_survives_reopen(tmp_path):
    path = str(tmp_path / "metrics")
    s = ChdbStore(path)
    await s.insert([rec(i) for i in range(7)])
    await s.close()
    s = ChdbStore(path)
    assert await s.count() == 7
    await s.close()


class HeldBackend:
    """A backend that holds each insert until ``release`` is set, and notes whether two calls
    ever ran at once (the store must never let them)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.entered, self.release = threading.Event(), threading.Event()
        self.running, self.overlapped = 0, False

    def _enter(self) -> None:
        self.running += 1
        self.overlapped |= self.running > 1

    def insert_json_rows(self, table, payload, token=None):
        self._enter()
        try:
            self.entered.set()
            self.release.wait(10)
            return self.inner.insert_json_rows(table, payload, token)
        finally:
            self.running -= 1

    def query_rows(self, sql):
        self._enter()
        try:
            return self.inner.query_rows(sql)
        finally:
            self.running -= 1

    def command(self, sql):
        return self.inner.command(sql)

    def close(self):
        return self.inner.close()


async def test_a_cancelled_call_holds_the_store_until_its_statement_ends(tmp_path):
    """A caller cancelled mid-insert (a recorder closed while it flushed) leaves the insert
    running in its thread; the next statement waits for it instead of running alongside it."""
    backend = HeldBackend(ChdbBackend(str(tmp_path / "metrics")))
    store = MetricsStore(backend)
    insert = asyncio.ensure_future(store.insert([rec(i) for i in range(5)], "batch-1"))
    await asyncio.to_thread(backend.entered.wait, 10)
    insert.cancel()
    counting = asyncio.ensure_future(store.count())
    await asyncio.sleep(0.05)
    assert not counting.done()  # waiting for the insert, not beside it
    backend.release.set()
    assert await counting == 5
    with pytest.raises(asyncio.CancelledError):
        await insert
    assert not backend.overlapped
    await store.close()


class FlakySink:
    """A sink speaking the MetricsClient protocol that fails the first ``failures`` inserts."""

    def __init__(self, store, failures: int = 0) -> None:
        self.store, self.failures, self.calls = store, failures, 0

    async def insert(self, rows, token=None):
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise MetricsBackendError("store unavailable")
        await self.store.insert(rows, token)


class LostAnswerSink(FlakySink):
    """Writes the first ``failures`` batches, then fails as if the answer never came back (the
    actor died after its insert)."""

    async def insert(self, rows, token=None):
        self.calls += 1
        await self.store.insert(rows, token)
        if self.failures:
            self.failures -= 1
            raise MetricsBackendError("the actor died before it answered")


async def test_recorder_batches_and_flushes_on_close(store):
    sink = FlakySink(store)
    recorder = MetricsRecorder(sink, interval_s=30, max_rows=1000)
    for i in range(250):
        recorder.record(rec(i))
    assert sink.calls == 0  # nothing written on the request path
    await recorder.close()
    assert await store.count() == 250
    assert sink.calls == 1


async def test_recorder_flushes_when_batch_is_full_and_retries_failures(store):
    sink = FlakySink(store, failures=2)
    recorder = MetricsRecorder(sink, interval_s=0.05, max_rows=10)
    for i in range(35):
        recorder.record(rec(i))
    deadline = asyncio.get_running_loop().time() + 10
    while await store.count() < 35:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    await recorder.close()
    assert await store.count() == 35  # failed batches were kept and written later, once


class SlowSink(FlakySink):
    """Each insert takes ``seconds``, as the embedded store's does with its rollups."""

    def __init__(self, store, seconds: float) -> None:
        super().__init__(store)
        self.seconds = seconds

    async def insert(self, rows, token=None):
        await asyncio.sleep(self.seconds)
        await super().insert(rows, token)


async def test_rows_recorded_during_an_insert_wait_for_the_next_tick(store):
    """Under steady traffic the recorder writes one batch per interval. It once sent the rows
    that came in during an insert right after it, back to back: with the embedded store's fixed
    cost per insert, that took half a core at 450 requests/s."""
    sink = SlowSink(store, seconds=0.05)
    interval_s = 0.4
    recorder = MetricsRecorder(sink, interval_s=interval_s, max_rows=100_000)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(300):  # a row every 5 ms for 1.5 s
        recorder.record(rec(i))
        await asyncio.sleep(0.005)
    elapsed = loop.time() - start
    calls = sink.calls
    await recorder.close()
    assert await store.count() == 300
    assert 1 <= calls <= elapsed / interval_s + 1, (calls, elapsed)


async def test_a_batch_written_but_not_acknowledged_is_stored_once(store):
    sink = LostAnswerSink(store, failures=2)
    recorder = MetricsRecorder(sink, interval_s=0.05, max_rows=1000)
    for i in range(20):
        recorder.record(rec(i))
    deadline = asyncio.get_running_loop().time() + 10
    while recorder.waiting:  # written, "lost", written again twice with the same token
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    await recorder.close()
    assert sink.calls == 3
    assert await store.count() == 20
    since = datetime(2000, 1, 1, tzinfo=timezone.utc)
    series = await store.timeseries("requests", "1d", since=since, until=datetime.now(timezone.utc) + timedelta(days=1))
    assert sum(v for s in series.series for _, v in s.points) == 20  # and counted once in the rollups


async def test_benchmark_rows_with_the_same_token_are_stored_once(store):
    """A pipeline's benchmark step re-run after a crash measures again; its rows are kept once."""
    row = {"id": "b1", "model_path": "m", "isl": 8, "osl": 4, "batch_size": 1, "tp_size": 1, "pp_size": 1,
           "attention_dp_size": 1, "moe_tp_size": 1, "moe_ep_size": 1, "silicon_ttft_ms": 1.0, "silicon_tpot_ms": 1.0}
    assert await store.insert_benchmarks([row, {**row, "id": "b2"}], token="run1-step1") == 2
    await store.insert_benchmarks([{**row, "id": "b3"}], token="run1-step1")  # the re-run
    await store.insert_benchmarks([{**row, "id": "b4"}], token="run1-step2")  # another step
    assert sorted(r["id"] for r in await store.benchmarks(model_path="m")) == ["b1", "b2", "b4"]


async def test_benchmark_rows_round_trip(store):
    row = {
        "id": "b1", "backend": "foundry", "backend_version": "0.1.0", "model_path": "foundry-tiny",
        "system": "cpu", "precision": "", "gemm_quant_mode": "", "moe_quant_mode": "", "isl": 32, "osl": 8,
        "batch_size": 4, "tp_size": 1, "pp_size": 1, "attention_dp_size": 1, "moe_tp_size": 1, "moe_ep_size": 1,
        "silicon_ttft_ms": 12.5, "silicon_tpot_ms": 3.25, "ttft_p95_ms": 20.0, "endpoint": "chat",
    }  # fmt: skip
    assert await store.insert_benchmarks([row, {**row, "id": "b2", "model_path": "other"}]) == 2
    got = await store.benchmarks(model_path="foundry-tiny")
    assert len(got) == 1
    assert got[0]["silicon_tpot_ms"] == 3.25 and got[0]["isl"] == 32
    assert got[0]["ttft_p95_ms"] == 20.0 and got[0]["endpoint"] == "chat"  # extras kept
    with pytest.raises(ValueError, match="isl must be a number"):
        await store.insert_benchmarks([{**row, "isl": "lots"}])


def test_unreachable_clickhouse_is_a_clear_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here
    with pytest.raises(MetricsBackendError, match=f"cannot reach ClickHouse at 127.0.0.1:{port}") as exc:
        ClickHouseHTTPBackend(f"http://default:secret-pw@127.0.0.1:{port}/foundry")
    assert "secret-pw" not in str(exc.value)
