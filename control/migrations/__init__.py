"""Alembic migrations of the control-plane database; run them with :func:`control.db.migrate`."""
