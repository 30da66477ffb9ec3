"""Migrations: upgrade to head on SQLite and PostgreSQL, idempotently, matching the models."""

from __future__ import annotations

import asyncio
import sys
import uuid

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from control.db import alembic_config, create_engine, migrate
from control.models import Base


async def _inspect(url: str, fn):
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(fn)
    finally:
        await engine.dispose()


async def test_migrate_creates_the_schema_at_head(database_url: str) -> None:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()

    def check(conn: sa.Connection):
        tables = set(sa.inspect(conn).get_table_names())
        revision = MigrationContext.configure(conn).get_current_revision()
        return tables, revision

    tables, revision = await _inspect(database_url, check)
    assert {"projects", "api_keys", "alembic_version"} <= tables
    assert revision == head


async def test_migrations_match_the_models(database_url: str) -> None:
    diff = await _inspect(database_url, lambda conn: compare_metadata(MigrationContext.configure(conn), Base.metadata))
    assert diff == []


async def test_migrate_again_changes_nothing(database_url: str) -> None:
    await migrate(database_url)
    revision = await _inspect(database_url, lambda conn: MigrationContext.configure(conn).get_current_revision())
    assert revision == ScriptDirectory.from_config(alembic_config()).get_current_head()


async def _migrate_in_processes(url: str, n: int) -> None:
    """Run ``migrate(url)`` in ``n`` fresh interpreters at once, as replicas starting together do."""
    code = "import asyncio, sys; from control.db import migrate; asyncio.run(migrate(sys.argv[1]))"
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        for _ in range(n)
    ]
    outputs = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), timeout=120)
    for proc, (out, _) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out.decode()[-3000:]


async def test_first_migrations_racing_on_a_fresh_sqlite_file(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    await _migrate_in_processes(url, 3)
    assert await _inspect(url, lambda conn: set(sa.inspect(conn).get_table_names())) >= {"projects", "api_keys"}


@pytest.mark.postgres
async def test_first_migrations_racing_on_a_fresh_postgres_database(postgres_url: str) -> None:
    name = f"fresh_{uuid.uuid4().hex[:8]}"
    admin = sa.make_url(postgres_url).set(database="postgres")
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    url = sa.make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    try:
        await _migrate_in_processes(url, 3)
        assert await _inspect(url, lambda conn: set(sa.inspect(conn).get_table_names())) >= {"projects", "api_keys"}
    finally:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
        engine.dispose()


async def test_migrate_creates_a_missing_sqlite_file_and_directory(tmp_path) -> None:
    db = tmp_path / "nested" / "dir" / "foundry.db"
    await migrate(f"sqlite:///{db}")
    assert db.is_file()
