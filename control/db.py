"""The control-plane database: URLs, engines and migrations.

Users give a plain URL, ``sqlite:///path/to/foundry.db`` or ``postgresql://user:pw@host/db``
(``postgres://`` and the explicit drivers ``sqlite+aiosqlite``, ``sqlite+pysqlite`` and
``postgresql+psycopg`` are accepted too). The async engine speaks ``sqlite+aiosqlite`` or
``postgresql+psycopg``; migrations run on the matching sync driver.

Several processes open one SQLite file (the control replica and every gateway replica), so every
SQLite connection runs in WAL mode (readers never wait for the writer) with a busy timeout
(writers queue instead of failing), and SQLAlchemy, not the ``sqlite3`` module, emits ``BEGIN``.

Example::

    await migrate("sqlite:///var/foundry.db")        # idempotent: run it at every start
    engine = create_engine("sqlite:///var/foundry.db", serialize_writes=True)
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from control.errors import DatabaseUnavailable

SQLITE_BUSY_TIMEOUT_MS = 10_000
POSTGRES_CONNECT_TIMEOUT_S = 10
POOL_TIMEOUT_S = 10
_MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATION_LOCK_ID = 0x466F756E  # PostgreSQL advisory lock held while migrating ("Foun")
# Alembic runs env.py through module-global proxies (alembic.context, alembic.op): one
# migration at a time per process. Other processes are kept out by the database locks.
_ALEMBIC_LOCK = threading.Lock()

_SQLITE_DRIVERS = {"sqlite", "sqlite+pysqlite", "sqlite+aiosqlite"}
_POSTGRES_DRIVERS = {"postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg_async"}


class DatabaseURLError(ValueError):
    """A database URL this stack cannot use; the message says which forms it accepts."""


def parse_url(url: str, *, is_async: bool) -> URL:
    """The SQLAlchemy URL for ``url`` with this stack's driver, async or sync.

    >>> parse_url("postgresql://u@db/foundry", is_async=True).drivername
    'postgresql+psycopg'
    >>> parse_url("sqlite:///x.db", is_async=True).drivername
    'sqlite+aiosqlite'
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise DatabaseURLError(f"cannot parse database URL {_redact(url)!r}: {_usage()}") from exc
    if parsed.drivername in _SQLITE_DRIVERS:
        if parsed.database in (None, "", ":memory:") or parsed.database.startswith("file::memory:"):
            raise DatabaseURLError(
                "an in-memory SQLite database is private to one connection; give a file path, "
                "e.g. sqlite:///var/foundry.db"
            )
        return parsed.set(drivername="sqlite+aiosqlite" if is_async else "sqlite+pysqlite")
    if parsed.drivername in _POSTGRES_DRIVERS:
        return parsed.set(drivername="postgresql+psycopg")
    shown = parsed.render_as_string(hide_password=True)
    raise DatabaseURLError(f"unsupported database URL {shown!r}: {_usage()}")


def create_engine(url: str, *, serialize_writes: bool = False, pool_size: int = 5) -> AsyncEngine:
    """An async engine for ``url``. Call it inside the process and event loop that uses it.

    ``serialize_writes`` (SQLite only) starts every transaction with ``BEGIN IMMEDIATE``, so
    concurrent read-then-write transactions queue on the busy timeout instead of failing on a
    stale snapshot ("database is locked"). The control plane, the one writer, sets it; readers
    such as the gateway's key source leave it off and never wait for a writer.
    """
    parsed = parse_url(url, is_async=True)
    if parsed.get_backend_name() == "sqlite":
        engine = create_async_engine(
            parsed,
            pool_size=pool_size,
            pool_timeout=POOL_TIMEOUT_S,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        )
        _configure_sqlite(engine.sync_engine, begin="BEGIN IMMEDIATE" if serialize_writes else "BEGIN")
        return engine
    return create_async_engine(
        parsed,
        pool_size=pool_size,
        pool_timeout=POOL_TIMEOUT_S,
        pool_pre_ping=True,
        connect_args={"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S},
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker:
    """Sessions for the service functions, which commit and then still read what they wrote."""
    return async_sessionmaker(engine, expire_on_commit=False)


async def migrate(url: str) -> None:
    """Bring the schema at ``url`` to the latest revision (``alembic upgrade head``).

    Idempotent and safe when several processes start at once: PostgreSQL migrates under an
    advisory lock, SQLite inside one ``BEGIN IMMEDIATE`` transaction. A SQLite file and its
    directory are created if missing. A database that cannot be reached raises
    :class:`~control.errors.DatabaseUnavailable` naming it (password hidden) and the reason.
    """
    await asyncio.to_thread(_upgrade, parse_url(url, is_async=False))


def alembic_config() -> Config:
    """Alembic's configuration, built in code: the scripts ship inside the ``control`` package."""
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


def _upgrade(url: URL) -> None:
    with _ALEMBIC_LOCK:
        _upgrade_locked(url)


def _upgrade_locked(url: URL) -> None:
    if url.get_backend_name() == "sqlite":
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, poolclass=NullPool, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        _configure_sqlite(engine, begin="BEGIN IMMEDIATE")
    else:
        engine = sa.create_engine(
            url, poolclass=NullPool, connect_args={"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S}
        )
    try:
        try:
            connection = engine.connect()
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            shown = url.render_as_string(hide_password=True)
            raise DatabaseUnavailable(f"the control database {shown} is unreachable: {reason}") from exc
        with connection, connection.begin():
            if url.get_backend_name() == "postgresql":
                connection.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    finally:
        engine.dispose()


def _configure_sqlite(engine: Engine, *, begin: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (see _on_begin)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:
        connection.exec_driver_sql(begin)


def _usage() -> str:
    return "use sqlite:///path/to/foundry.db or postgresql://user:password@host:5432/database"


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return scheme + sep + rest


class ReplicaDatabase:
    """The control database as a source held by Ray Serve replicas (keys, routes): built from a
    URL alone and picklable, so it can be sent to them; the engine is created on first use, in
    the process and event loop that uses it, and is not pickled."""

    def __init__(self, database_url: str) -> None:
        parse_url(database_url, is_async=True)  # a bad URL fails here, not in a replica
        self._url = database_url
        self._engine: AsyncEngine | None = None

    def __getstate__(self) -> dict:
        return {"database_url": self._url}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["database_url"])

    def __repr__(self) -> str:
        shown = parse_url(self._url, is_async=True).render_as_string(hide_password=True)
        return f"{type(self).__name__}({shown!r})"

    async def close(self) -> None:
        if self._engine is not None:
            engine, self._engine = self._engine, None
            await engine.dispose()

    def _engine_(self) -> AsyncEngine:
        if self._engine is None:
            self._engine = create_engine(self._url, pool_size=1)
        return self._engine
