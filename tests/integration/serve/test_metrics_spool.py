"""A recorder killed outright (SIGKILL) loses no row: the next recorder on its spool directory
sends what it left to the real store (chdb), once, even where the store had already written the
batch that was in flight when the recorder died."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from serve.metrics.actor import MetricsRecorder
from serve.metrics.records import RequestRecord
from serve.metrics.spool import replay_orphans
from serve.metrics.store import ChdbStore

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[3]
BATCHED, LATER = 30, 12

# A "replica": records BATCHED rows, starts sending them (the store never answers), records
# LATER more, prints the in-flight batch's token, and waits to be killed.
VICTIM = """
import asyncio, json, sys
from datetime import datetime, timezone
from pathlib import Path
from serve.metrics.actor import MetricsRecorder
from serve.metrics.records import RequestRecord

class Hanging:
    def __init__(self):
        self.sending = asyncio.Event()
        self.token = None
    async def insert(self, rows, token=None):
        self.token = token
        self.sending.set()
        await asyncio.Event().wait()

def rec(i):
    return RequestRecord(request_id=f"r{i}", ts=datetime.now(timezone.utc), endpoint="chat.completions",
                         model="m", status=200, prompt_tokens=3, completion_tokens=2)

async def main():
    sink = Hanging()
    recorder = MetricsRecorder(sink, interval_s=3600, max_rows=BATCHED, spool_dir=Path(sys.argv[1]))
    for i in range(BATCHED):
        recorder.record(rec(i))
    await sink.sending.wait()
    for i in range(BATCHED, BATCHED + LATER):
        recorder.record(rec(i))
    print(json.dumps(sink.token), flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
""".replace("BATCHED", str(BATCHED)).replace("LATER", str(LATER))


def rec(i: int) -> RequestRecord:
    return RequestRecord(
        request_id=f"r{i}", ts=datetime.now(timezone.utc), endpoint="chat.completions", model="m", status=200,
        prompt_tokens=3, completion_tokens=2,
    )  # fmt: skip


def killed_recorder(spool: Path) -> str:
    """Run the victim until it has a batch in flight and rows after it; SIGKILL it. Its token."""
    proc = subprocess.Popen([sys.executable, "-c", VICTIM, str(spool)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        token = json.loads(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait(30)
        proc.stdout.close()
    return token


@pytest.fixture
async def store(tmp_path):
    s = ChdbStore(str(tmp_path / "metrics"))
    yield s
    await s.close()


async def test_the_next_recorder_sends_what_a_killed_one_left_once(tmp_path, store):
    spool = tmp_path / "spool"
    token = killed_recorder(spool)
    assert token
    # the store had written the in-flight batch; only its answer never came back
    await store.insert([rec(i) for i in range(BATCHED)], token)

    recorder = MetricsRecorder(store, interval_s=3600, spool_dir=spool)
    recorder.record(rec(1000))
    await recorder.close()
    assert await store.count() == BATCHED + LATER + 1  # none lost, none doubled
    assert await replay_orphans(spool, store.insert) == 0  # nothing left to send
    assert list(spool.iterdir()) == []  # the recorder's own file went with it


async def test_an_interrupted_replay_repeated_stores_the_rows_once(tmp_path, store):
    spool = tmp_path / "spool"
    killed_recorder(spool)
    sent: list[tuple[list[RequestRecord], str]] = []

    async def insert_then_die(rows, token):  # the replaying recorder dies after its first batch
        sent.append((rows, token))
        await store.insert(rows, token)
        if len(sent) == 1:
            raise ConnectionError("died")

    with pytest.raises(ConnectionError):
        await replay_orphans(spool, insert_then_die)
    assert await replay_orphans(spool, store.insert) == BATCHED + LATER
    assert await store.count() == BATCHED + LATER


async def test_a_live_recorder_is_not_replayed_and_keeps_its_file_small(tmp_path, store):
    spool = tmp_path / "spool"
    live = MetricsRecorder(store, interval_s=3600, spool_dir=spool)
    for i in range(5):
        live.record(rec(i))
    assert await replay_orphans(spool, store.insert) == 0  # its lock is held
    await live.flush()
    assert [p.stat().st_size for p in spool.glob("*.jsonl")] == [0]  # every row stored: nothing kept
    live.record(rec(5))
    await live.close()
    assert await store.count() == 6
    assert list(spool.iterdir()) == []
