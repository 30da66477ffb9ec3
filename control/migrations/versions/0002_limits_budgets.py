"""Per-model limits and budgets of keys; budgets and ``updated_at`` of projects.

Only columns are added (``ALTER TABLE ... ADD COLUMN`` on both SQLite and PostgreSQL): no table
is rebuilt, so existing rows, and the foreign key from ``api_keys`` to ``projects``, stay as
they are. ``projects.updated_at`` starts as each project's ``created_at``.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Only for the ALTER: SQLite adds a NOT NULL column only with a constant default. The rows
# get their created_at right after, and the ORM always sets updated_at itself.
_EPOCH = "1970-01-01 00:00:00"


def _budget_columns() -> list[sa.Column]:
    return [
        sa.Column("budget_tokens", sa.BigInteger(), nullable=True),
        sa.Column("budget_usd", sa.Float(), nullable=True),
        sa.Column("budget_period", sa.String(8), nullable=False, server_default="month"),
    ]


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("model_limits", sa.JSON(), nullable=True))
    for column in _budget_columns():
        op.add_column("api_keys", column)
    for column in _budget_columns():
        op.add_column("projects", column)
    op.add_column(
        "projects",
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text(f"'{_EPOCH}'")),
    )
    op.execute("UPDATE projects SET updated_at = created_at")
    if op.get_bind().dialect.name == "postgresql":  # SQLite cannot drop a default without a rebuild
        op.alter_column("projects", "updated_at", server_default=None)


def downgrade() -> None:
    for name in ("updated_at", "budget_period", "budget_usd", "budget_tokens"):
        op.drop_column("projects", name)
    for name in ("budget_period", "budget_usd", "budget_tokens", "model_limits"):
        op.drop_column("api_keys", name)
