"""Limits of project members (rpm, tpm, a token and/or USD budget), shared by a member's keys.

Only columns are added (``ALTER TABLE ... ADD COLUMN`` on SQLite and PostgreSQL): existing
memberships keep their rows and get no limits.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_COLUMNS = ("rpm", "tpm", "budget_tokens", "budget_usd", "budget_period")


def upgrade() -> None:
    op.add_column("project_members", sa.Column("rpm", sa.Integer(), nullable=True))
    op.add_column("project_members", sa.Column("tpm", sa.Integer(), nullable=True))
    op.add_column("project_members", sa.Column("budget_tokens", sa.BigInteger(), nullable=True))
    op.add_column("project_members", sa.Column("budget_usd", sa.Float(), nullable=True))
    op.add_column(
        "project_members", sa.Column("budget_period", sa.String(8), nullable=False, server_default="month")
    )


def downgrade() -> None:
    for name in reversed(_COLUMNS):
        op.drop_column("project_members", name)
