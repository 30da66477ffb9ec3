"""The deployment half: the model registry, clusters and deployments.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("source", sa.String(1024), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("path", sa.String(1024), nullable=True),
        sa.Column("provider", sa.JSON(), nullable=True),
        sa.Column("architecture", sa.JSON(), nullable=True),
        sa.Column("description", sa.String(2000), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_models"),
        sa.UniqueConstraint("name", name="uq_models_name"),
    )
    op.create_table(
        "clusters",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("context", sa.String(255), nullable=True),
        sa.Column("namespace", sa.String(63), nullable=True),
        sa.Column("kubeconfig", sa.String(), nullable=True),
        sa.Column("inventory", sa.JSON(), nullable=False),
        sa.Column("operator", sa.Boolean(), nullable=True),
        sa.Column("health", sa.String(16), nullable=False),
        sa.Column("health_reason", sa.String(1000), nullable=True),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_clusters"),
        sa.UniqueConstraint("name", name="uq_clusters_name"),
    )
    op.create_table(
        "deployments",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("model_id", sa.String(32), nullable=False),
        sa.Column("cluster_id", sa.String(32), nullable=False),
        sa.Column("project_id", sa.String(32), nullable=True),
        sa.Column("created_by", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("engine", sa.String(8), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=True),
        sa.Column("predicted", sa.JSON(), nullable=True),
        sa.Column("measured", sa.JSON(), nullable=True),
        sa.Column("pricing", sa.JSON(), nullable=True),
        sa.Column("endpoint", sa.JSON(), nullable=True),
        sa.Column("registered", sa.Boolean(), nullable=False),
        sa.Column("pipeline_run_id", sa.String(64), nullable=True),
        sa.Column("error", sa.String(4000), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_deployments"),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name="fk_deployments_model_id_models"),
        sa.ForeignKeyConstraint(["cluster_id"], ["clusters.id"], name="fk_deployments_cluster_id_clusters"),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], name="fk_deployments_project_id_projects"),
    )
    op.create_index("ix_deployments_model_id", "deployments", ["model_id"])
    op.create_index("ix_deployments_cluster_id", "deployments", ["cluster_id"])
    op.create_index("ix_deployments_project_id", "deployments", ["project_id"])
    op.create_index(
        "uq_deployments_live_name", "deployments", ["name"], unique=True,
        sqlite_where=sa.text("deleted_at IS NULL"), postgresql_where=sa.text("deleted_at IS NULL"),
    )  # fmt: skip


def downgrade() -> None:
    op.drop_table("deployments")
    op.drop_table("clusters")
    op.drop_table("models")
