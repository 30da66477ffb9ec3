"""A recorder's metrics rows on local disk until the store has them, so that a gateway replica
killed outright (SIGKILL, the OOM killer) loses none of the rows of requests it answered.

    MetricsRecorder.record ──► Spool.append         one write(2): in the page cache, it outlives
                                                    the process
    MetricsRecorder.flush  ──► Spool.sending(token, rows) … store.insert(rows, token) … Spool.sent()
    a recorder's first flush ► replay_orphans        the files of recorders that died, sent once
                                                    each (the store deduplicates by token)

Each recorder writes ``<dir>/<id>.jsonl`` and holds an exclusive ``flock`` on ``<id>.lock``
while it lives; a lock file nobody holds marks an orphan. Lines, in order: ``{"row": {...}}``
and ``{"batch": token, "ids": [request ids]}``. Once a batch is stored the file is replaced (a
new file renamed over it) by one holding only the rows still unsent, so it stays as small as
the recorder's buffer.

Replaying an orphan: a batch still in the file goes again with its own token (the store may
have written it before the recorder died); rows never batched go with a token derived from
the file, so a replay interrupted and repeated stores them once too. Only the files of this
machine are seen: a replica replaced on another node leaves its rows until a recorder starts
here again.
"""

from __future__ import annotations

import fcntl
import logging
import os
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from pathlib import Path

import orjson

from serve.metrics.records import RequestRecord

log = logging.getLogger(__name__)

__all__ = ["Spool", "replay_orphans"]

TAIL_BATCH_ROWS = 512


class Spool:
    """The append-only file of one recorder, locked for its life."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.id = f"{os.getpid()}-{uuid.uuid4().hex}"
        self._dir = directory
        self._path = directory / f"{self.id}.jsonl"
        self._lock = os.open(directory / f"{self.id}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._fd = os.open(self._path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)

    def append(self, rec: RequestRecord) -> None:
        os.write(self._fd, orjson.dumps({"row": rec}) + b"\n")

    def sending(self, token: str, rows: Iterable[RequestRecord]) -> None:
        os.write(self._fd, orjson.dumps({"batch": token, "ids": [r.request_id for r in rows]}) + b"\n")

    def sent(self, unsent: Iterable[RequestRecord]) -> None:
        """The last batch is stored: keep only ``unsent`` (rows recorded since)."""
        tmp = self._dir / f"{self.id}.tmp"
        tmp.write_bytes(b"".join(orjson.dumps({"row": r}) + b"\n" for r in unsent))
        os.replace(tmp, self._path)
        os.close(self._fd)
        self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND)

    def close(self) -> None:
        """Everything was sent: the file goes."""
        os.close(self._fd)
        self._path.unlink(missing_ok=True)
        (self._dir / f"{self.id}.lock").unlink(missing_ok=True)
        os.close(self._lock)


async def replay_orphans(
    directory: Path, insert: Callable[[list[RequestRecord], str], Awaitable[None]], *, keep: str = ""
) -> int:
    """Send the rows of every recorder of ``directory`` that died, once; returns how many. A
    store failure raises, leaving the orphan for the next call. ``keep``: the caller's own id."""
    sent = 0
    for lock_path in sorted(directory.glob("*.lock")):
        rec_id = lock_path.stem
        if rec_id == keep:
            continue
        try:
            lock = os.open(lock_path, os.O_RDWR)
        except FileNotFoundError:
            continue  # replayed by another recorder meanwhile
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its recorder is alive (or another one is replaying it)
            data = directory / f"{rec_id}.jsonl"
            left = 0
            for token, rows in _unsent(data.read_bytes() if data.exists() else b"", rec_id):
                await insert(rows, token)
                left += len(rows)
            data.unlink(missing_ok=True)
            lock_path.unlink(missing_ok=True)
            if left:
                log.warning("sent %d metrics rows left by recorder %s", left, rec_id)
            sent += left
        finally:
            os.close(lock)
    return sent


def _unsent(content: bytes, rec_id: str) -> list[tuple[str, list[RequestRecord]]]:
    """(token, rows) still to store, from a spool file's lines (a torn last line is skipped)."""
    rows: dict[str, RequestRecord] = {}
    batches: dict[str, list[str]] = {}
    for line in content.splitlines():
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # the process died mid-write: that row's request was not answered yet
        if "row" in entry:
            row = entry["row"]
            row["ts"] = datetime.fromisoformat(row["ts"])
            rows[row["request_id"]] = RequestRecord(**row)
        elif "batch" in entry:
            batches[entry["batch"]] = entry["ids"]
    out = []
    for token, ids in batches.items():
        batch = [rows.pop(i) for i in ids if i in rows]
        if batch:
            out.append((token, batch))
    tail = list(rows.values())
    for n, i in enumerate(range(0, len(tail), TAIL_BATCH_ROWS)):
        out.append((f"{rec_id}-tail{n}", tail[i : i + TAIL_BATCH_ROWS]))
    return out
