"""Alembic environment: runs on the connection :func:`control.db.migrate` hands over.

There is no alembic.ini. To write a new revision against a scratch database::

    python -c "from alembic import command; from control.db import alembic_config; \
        c = alembic_config(); c.set_main_option('sqlalchemy.url', 'sqlite:///scratch.db'); \
        command.revision(c, 'what changed', autogenerate=True)"
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from control.models import Base


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = sa.create_engine(context.config.get_main_option("sqlalchemy.url"), poolclass=sa.pool.NullPool)
    with engine.begin() as connection:
        _run(connection)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; use control.db.migrate")
_main()
