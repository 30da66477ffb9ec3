"""What the API shows of pipelines and runs, with a version on every run for optimistic locking.

Execution state (which steps finished, their outputs, sleeps, messages) lives in DBOS's system
tables and is what recovery replays; these three tables, in the same database, are the view the
API reads and the compare-and-set target of state changes from outside (cancel, events)::

    pipeline_definitions  (id, version) -> name, definition        immutable; a new version per update
    pipeline_runs         id -> status, params, outputs, progress, version, ...
    pipeline_steps        (run_id, step_id) -> status, attempts, times, outputs, error, progress

Writes made by the executor are idempotent (a replayed step writes the same values; a step
that reached a final status never leaves it), so replays after a crash leave the view right.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from pipelines.errors import Conflict, NotFound

__all__ = ["RUN_FINAL", "STEP_FINAL", "RunStore", "iso", "sync_url"]

RUN_FINAL = frozenset({"succeeded", "failed", "cancelled"})
STEP_FINAL = frozenset({"succeeded", "failed", "skipped", "cancelled"})

metadata = sa.MetaData()

definitions = sa.Table(
    "pipeline_definitions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("definition", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.UniqueConstraint("name", "version", name="uq_pipeline_definitions_name_version"),
)

runs = sa.Table(
    "pipeline_runs",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("pipeline_id", sa.String(64), nullable=False, index=True),
    sa.Column("pipeline_version", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("outputs", sa.JSON, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("progress", sa.Float, nullable=False, default=0.0),
    sa.Column("events", sa.JSON, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Column("updated_at", sa.Float, nullable=False),
)

steps = sa.Table(
    "pipeline_steps",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("step_id", sa.String(64), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("action", sa.String(100), nullable=False),
    sa.Column("weight", sa.Float, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("progress", sa.Float, nullable=False, default=0.0),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Column("outputs", sa.JSON, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("event", sa.String(200)),
)


def sync_url(url: str) -> str:
    """The SQLAlchemy URL (pysqlite or psycopg) for a ``sqlite:///`` or ``postgresql://`` URL."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.set(drivername="sqlite").render_as_string(hide_password=False)
    if parsed.get_backend_name() == "postgresql":
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    raise ValueError(f"unsupported database URL scheme {parsed.drivername!r} (sqlite or postgresql)")


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


class RunStore:
    """Each method is one transaction run in a worker thread (one hop off the event loop, rather
    than one per statement as with an async driver)."""

    def __init__(self, database_url: str, *, on_change: Callable[[str], None] | None = None) -> None:
        url = sync_url(database_url)
        self._sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {"connect_args": {"timeout": 30}} if self._sqlite else {"pool_size": 10, "max_overflow": 20}
        self.engine: sa.Engine = sa.create_engine(url, **kwargs)
        if self._sqlite:
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        # SQLite has one writer at a time: queue our own writers here instead of in busy loops.
        self._write_lock = asyncio.Lock() if self._sqlite else None
        self._on_change = on_change or (lambda run_id: None)

    async def create_tables(self) -> None:
        await asyncio.to_thread(metadata.create_all, self.engine)

    async def close(self) -> None:
        await asyncio.to_thread(self.engine.dispose)

    async def _read(self, op: Callable[[sa.Connection], Any]) -> Any:
        def run() -> Any:
            with self.engine.connect() as conn:
                return op(conn)

        return await asyncio.to_thread(run)

    async def _write(self, op: Callable[[sa.Connection], Any]) -> Any:
        def run() -> Any:
            with self.engine.begin() as conn:
                return op(conn)

        if self._write_lock is None:
            return await asyncio.to_thread(run)
        async with self._write_lock:
            return await asyncio.to_thread(run)

    # --- definitions ---------------------------------------------------------------------------

    async def save_definition(self, name: str, definition: dict) -> tuple[str, int]:
        def op(conn: sa.Connection) -> tuple[str, int]:
            row = conn.execute(
                sa.select(definitions.c.id, definitions.c.version)
                .where(definitions.c.name == name)
                .order_by(definitions.c.version.desc())
                .limit(1)
            ).first()
            pipeline_id, version = (row.id, row.version + 1) if row else (f"pl_{uuid.uuid4().hex[:16]}", 1)
            conn.execute(
                definitions.insert().values(
                    id=pipeline_id, version=version, name=name, definition=definition, created_at=time.time()
                )
            )
            return pipeline_id, version

        try:
            return await self._write(op)
        except IntegrityError:
            raise Conflict(f"pipeline {name!r} was changed at the same time; try again", param="name") from None

    async def definition(self, pipeline_id: str, version: int | None = None) -> dict:
        query = sa.select(definitions).where(sa.or_(definitions.c.id == pipeline_id, definitions.c.name == pipeline_id))
        if version is not None:
            query = query.where(definitions.c.version == version)
        row = await self._read(lambda conn: conn.execute(query.order_by(definitions.c.version.desc()).limit(1)).first())
        if row is None:
            raise NotFound(f"no pipeline {pipeline_id!r}", param="pipeline_id")
        return _definition_public(row)

    async def list_definitions(self) -> list[dict]:
        latest = (
            sa.select(definitions.c.id, sa.func.max(definitions.c.version).label("version"))
            .group_by(definitions.c.id)
            .subquery()
        )
        query = (
            sa.select(definitions)
            .join(latest, sa.and_(definitions.c.id == latest.c.id, definitions.c.version == latest.c.version))
            .order_by(definitions.c.name)
        )
        return await self._read(lambda conn: [_definition_public(row) for row in conn.execute(query)])

    # --- runs ------------------------------------------------------------------------------------

    async def create_run(
        self, run_id: str, pipeline_id: str, pipeline_version: int, params: dict, step_rows: list[dict]
    ) -> None:
        now = time.time()

        def op(conn: sa.Connection) -> None:
            conn.execute(
                runs.insert().values(
                    id=run_id, pipeline_id=pipeline_id, pipeline_version=pipeline_version, status="pending",
                    params=params, outputs={}, error=None, progress=0.0, events=[], version=1,
                    created_at=now, updated_at=now,
                )
            )  # fmt: skip
            conn.execute(
                steps.insert(),
                [
                    {"run_id": run_id, "status": "pending", "attempts": 0, "progress": 0.0, "outputs": {}, **row}
                    for row in step_rows
                ],
            )

        await self._write(op)
        self._on_change(run_id)

    async def run_started(self, run_id: str) -> None:
        def op(conn: sa.Connection) -> int:
            return conn.execute(
                runs.update()
                .where(runs.c.id == run_id, runs.c.status == "pending")
                .values(status="running", started_at=time.time(), updated_at=time.time(), version=runs.c.version + 1)
            ).rowcount

        if await self._write(op):
            self._on_change(run_id)

    async def update_step(
        self,
        run_id: str,
        step_id: str,
        *,
        status: str | None = None,
        attempts: int | None = None,
        progress: float | None = None,
        outputs: dict | None = None,
        error: str | None | type[Ellipsis] = ...,
        event: str | None = None,
        started_at: float | None = None,
        finished_at: float | None = None,
    ) -> bool:
        """Change a step that has not reached a final status; the run's progress follows (never
        backwards) and its version goes up. False if nothing changed."""
        values: dict[str, Any] = {}
        if status is not None:
            values["status"] = status
            if status in STEP_FINAL:
                values["progress"] = 100.0
                values["finished_at"] = finished_at or time.time()
            if status in ("running", "waiting"):
                values["started_at"] = sa.func.coalesce(steps.c.started_at, started_at or time.time())
        if attempts is not None:
            values["attempts"] = attempts
        if progress is not None and "progress" not in values:
            values["progress"] = progress
        if outputs is not None:
            values["outputs"] = outputs
        if error is not ...:
            values["error"] = error
        if event is not None:
            values["event"] = event
            values["started_at"] = sa.func.coalesce(steps.c.started_at, started_at or time.time())
        # Only a step's progress going up can move the run's (which never goes back).
        recompute = bool(values.get("progress"))

        def op(conn: sa.Connection) -> bool:
            result = conn.execute(
                steps.update()
                .where(steps.c.run_id == run_id, steps.c.step_id == step_id, steps.c.status.not_in(STEP_FINAL))
                .values(**values)
            )
            if not result.rowcount:
                return False
            _follow(conn, run_id, recompute=recompute)
            return True

        changed = await self._write(op)
        if changed:
            self._on_change(run_id)
        return changed

    async def finish_run(self, run_id: str, status: str, *, outputs: dict | None = None, error: str | None = None) -> bool:
        """Give the run its final status (unless it has one); steps still open become cancelled."""
        now = time.time()

        def op(conn: sa.Connection) -> bool:
            result = conn.execute(
                runs.update()
                .where(runs.c.id == run_id, runs.c.status.not_in(RUN_FINAL))
                .values(
                    status=status, outputs=outputs or {}, error=error, finished_at=now, updated_at=now,
                    version=runs.c.version + 1,
                    started_at=sa.func.coalesce(runs.c.started_at, now),
                )
            )  # fmt: skip
            if not result.rowcount:
                return False
            conn.execute(
                steps.update()
                .where(steps.c.run_id == run_id, steps.c.status.not_in(STEP_FINAL))
                .values(status="cancelled", finished_at=now, progress=100.0)
            )
            if status == "succeeded":
                conn.execute(runs.update().where(runs.c.id == run_id).values(progress=100.0))
            return True

        changed = await self._write(op)
        if changed:
            self._on_change(run_id)
        return changed

    async def compare_and_set(self, run_id: str, expected_version: int, values: dict) -> bool:
        """Apply ``values`` only if the run is still at ``expected_version`` and not final."""

        def op(conn: sa.Connection) -> int:
            return conn.execute(
                runs.update()
                .where(runs.c.id == run_id, runs.c.version == expected_version, runs.c.status.not_in(RUN_FINAL))
                .values(**values, version=runs.c.version + 1, updated_at=time.time())
            ).rowcount

        changed = bool(await self._write(op))
        if changed:
            self._on_change(run_id)
        return changed

    async def cancel_open_steps(self, run_id: str, step_ids: list[str], error: str) -> None:
        if not step_ids:
            return
        now = time.time()

        def op(conn: sa.Connection) -> None:
            conn.execute(
                steps.update()
                .where(steps.c.run_id == run_id, steps.c.step_id.in_(step_ids), steps.c.status.not_in(STEP_FINAL))
                .values(status="cancelled", finished_at=now, progress=100.0, error=error)
            )
            _follow(conn, run_id, recompute=True)

        await self._write(op)
        self._on_change(run_id)

    async def run_row(self, run_id: str) -> dict:
        row = await self._read(lambda conn: conn.execute(sa.select(runs).where(runs.c.id == run_id)).first())
        if row is None:
            raise NotFound(f"no pipeline run {run_id!r}", param="run_id")
        return dict(row._mapping)

    async def run(self, run_id: str) -> dict:
        """The run as the API shows it."""

        def op(conn: sa.Connection):
            row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).first()
            if row is None:
                return None
            return row, conn.execute(sa.select(steps).where(steps.c.run_id == run_id).order_by(steps.c.position)).all()

        found = await self._read(op)
        if found is None:
            raise NotFound(f"no pipeline run {run_id!r}", param="run_id")
        return _run_public(*found)

    async def list_runs(self, pipeline_id: str | None = None, limit: int = 100) -> list[dict]:
        query = sa.select(runs.c.id).order_by(runs.c.created_at.desc()).limit(limit)
        if pipeline_id:
            query = query.where(runs.c.pipeline_id == pipeline_id)
        ids = await self._read(lambda conn: [r.id for r in conn.execute(query)])
        return [await self.run(run_id) for run_id in ids]

    async def open_runs(self) -> list[str]:
        return await self._read(
            lambda conn: [r.id for r in conn.execute(sa.select(runs.c.id).where(runs.c.status.not_in(RUN_FINAL)))]
        )


def _follow(conn: sa.Connection, run_id: str, *, recompute: bool) -> None:
    """The run follows a step change: a new version, and (if asked) its weighted progress."""
    values: dict[str, Any] = {"version": runs.c.version + 1, "updated_at": time.time()}
    if recompute:
        rows = conn.execute(sa.select(steps.c.weight, steps.c.progress).where(steps.c.run_id == run_id)).all()
        total = sum(r.weight for r in rows) or 1.0
        progress = round(sum(r.weight * r.progress for r in rows) / total, 2)
        values["progress"] = sa.case((runs.c.progress > progress, runs.c.progress), else_=progress)
    conn.execute(runs.update().where(runs.c.id == run_id).values(**values))


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    # The view only: under write-ahead logging a killed process loses nothing either way; after a
    # power cut the last view rows may be missing, and the replay (or _reconcile) rewrites them.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _definition_public(row) -> dict:
    return {
        "id": row.id,
        "name": row.name,
        "version": row.version,
        "created_at": iso(row.created_at),
        "definition": row.definition,
    }


def _run_public(row, step_rows) -> dict:
    status = row.status
    if status == "running":
        open_statuses = {s.status for s in step_rows}
        if "running" not in open_statuses and "waiting" in open_statuses:
            status = "waiting"
    eta_s = None
    if status in ("running", "waiting") and row.started_at and 0 < row.progress < 100:
        elapsed = max(0.0, time.time() - row.started_at)
        eta_s = round(elapsed * (100 - row.progress) / row.progress, 1)
    return {
        "id": row.id,
        "pipeline_id": row.pipeline_id,
        "pipeline_version": row.pipeline_version,
        "status": status,
        "progress": row.progress,
        "eta_s": eta_s,
        "params": row.params,
        "outputs": row.outputs,
        "error": row.error,
        "events": row.events,
        "created_at": iso(row.created_at),
        "started_at": iso(row.started_at),
        "finished_at": iso(row.finished_at),
        "steps": {
            s.step_id: {
                "status": s.status,
                "action": s.action,
                "attempts": s.attempts,
                "progress": s.progress,
                "started_at": iso(s.started_at),
                "finished_at": iso(s.finished_at),
                "outputs": s.outputs,
                "error": s.error,
            }
            for s in step_rows
        },
        "version": row.version,
    }
