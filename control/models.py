"""Tables of the control plane: projects, their API keys, users and their project roles, the
hash-chained audit log, and the deployment half: the model registry, clusters and deployments.

The database stores only the SHA-256 of a key (:func:`serve.auth.hash_key`) and its display
prefix; the secret is shown once, when the key is created. Timestamps are UTC and come back
timezone-aware on every backend. Schema changes go through a migration in
``control/migrations/versions``.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    TypeDecorator,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_id(prefix: str) -> str:
    """A short random id such as ``proj_3f2a9c1e4b7d`` (48 random bits)."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


class UTCDateTime(TypeDecorator):
    """A timestamp stored in UTC and always returned timezone-aware (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_name)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("proj"))
    name: Mapped[str] = mapped_column(String(64), unique=True)
    # A budget shared by every key of the project, per calendar period (UTC); None: no budget.
    budget_tokens: Mapped[int | None] = mapped_column(BigInteger)
    budget_usd: Mapped[float | None] = mapped_column(Float)
    budget_period: Mapped[str] = mapped_column(String(8), default="month", server_default="month")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Bumped on every change: the gateway's key source watches it too (project budgets).
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    keys: Mapped[list[ApiKey]] = relationship(back_populates="project")


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("key"))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    # The user the key acts for: it may do no more than its owner's current role in the project.
    # None: an admin key made at bootstrap, or a key from before users existed (gateway only).
    owner_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str | None] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    models: Mapped[list[str] | None] = mapped_column(JSON(none_as_null=True))  # None: every model
    rpm: Mapped[int | None] = mapped_column(Integer)
    tpm: Mapped[int | None] = mapped_column(Integer)
    # {"model": {"rpm": 60, "tpm": 100000}} on top of rpm/tpm; None: no per-model limits
    model_limits: Mapped[dict[str, dict[str, int]] | None] = mapped_column(JSON(none_as_null=True))
    budget_tokens: Mapped[int | None] = mapped_column(BigInteger)
    budget_usd: Mapped[float | None] = mapped_column(Float)
    budget_period: Mapped[str] = mapped_column(String(8), default="month", server_default="month")
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Bumped on every change: the gateway's key source watches max(updated_at).
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    project: Mapped[Project] = relationship(back_populates="keys")
    owner: Mapped[User | None] = relationship()

    def is_active(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


class User(Base):
    """A person, provisioned on first sign-in from the OIDC token or created ahead by email."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("usr"))
    sub: Mapped[str | None] = mapped_column(String(255), unique=True)  # None until first sign-in
    email: Mapped[str | None] = mapped_column(String(320), unique=True)
    name: Mapped[str | None] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)  # granted in Foundry
    # Granted by the issuer (``admin_roles`` in the roles claim), as of the user's last token.
    idp_admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    memberships: Mapped[list[ProjectMember]] = relationship(back_populates="user")


class ProjectMember(Base):
    """A user's role in a project: ``owner``, ``member`` or ``viewer`` (see control.permissions)."""

    __tablename__ = "project_members"

    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True, index=True)
    role: Mapped[str] = mapped_column(String(16))
    # The member's limits in the project, shared by every key it owns there (None: no limit);
    # each key's own limits still apply, so the tighter one admits (serve.auth.MemberLimits).
    rpm: Mapped[int | None] = mapped_column(Integer)
    tpm: Mapped[int | None] = mapped_column(Integer)
    budget_tokens: Mapped[int | None] = mapped_column(BigInteger)
    budget_usd: Mapped[float | None] = mapped_column(Float)
    budget_period: Mapped[str] = mapped_column(String(8), default="month", server_default="month")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    user: Mapped[User] = relationship(back_populates="memberships")
    project: Mapped[Project] = relationship()


class AuditRecord(Base):
    """One change made through the control API; ``hash`` chains it to the record before it."""

    __tablename__ = "audit_records"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(64))  # "user:usr_...", "key:key_..." or "system"
    action: Mapped[str] = mapped_column(String(64), index=True)  # e.g. "key.create"
    target: Mapped[str] = mapped_column(String(128))  # e.g. "key:key_..."
    project_id: Mapped[str | None] = mapped_column(String(32), index=True)
    request_id: Mapped[str | None] = mapped_column(String(64))
    changes: Mapped[dict] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditHead(Base):
    """The chain's length and last hash, written with every record: deleting the newest records
    shows as a head that no longer matches."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # always 1
    length: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))


class RegisteredModel(Base):
    """A model in the registry: a local directory, the built-in model, or an outside provider's model.

    ``architecture`` is what the optimizer needs to simulate it (layers, hidden size, heads, KV
    heads, experts, dtype, parameter count, context length), read from its config.json.
    """

    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("mdl"))
    name: Mapped[str] = mapped_column(String(128), unique=True)
    source: Mapped[str] = mapped_column(String(1024))  # as given: a path, builtin:..., provider:model
    kind: Mapped[str] = mapped_column(String(16))  # "local" | "builtin" | "provider"
    path: Mapped[str | None] = mapped_column(String(1024))  # the model directory (local, builtin)
    provider: Mapped[dict | None] = mapped_column(JSON(none_as_null=True))  # a [models.X.providers.Y] table
    architecture: Mapped[dict | None] = mapped_column(JSON(none_as_null=True))
    description: Mapped[str] = mapped_column(String(2000), default="")
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Cluster(Base):
    """Where deployments run: the Ray cluster of the stack (``local``) or a Kubernetes cluster with
    the KubeRay operator. ``kubeconfig`` is stored encrypted (:mod:`serve.secrets`), never returned."""

    __tablename__ = "clusters"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("clu"))
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # "local" | "kubernetes"
    context: Mapped[str | None] = mapped_column(String(255))
    namespace: Mapped[str | None] = mapped_column(String(63))
    kubeconfig: Mapped[str | None] = mapped_column(String)  # encrypted
    inventory: Mapped[dict] = mapped_column(JSON, default=dict)
    operator: Mapped[bool | None] = mapped_column(Boolean)  # KubeRay's rayservices.ray.io CRD present
    health: Mapped[str] = mapped_column(String(16), default="unknown")  # healthy | unhealthy | unknown
    health_reason: Mapped[str | None] = mapped_column(String(1000))
    refreshed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Deployment(Base):
    """A model deployed on a cluster by the deployment pipeline, served by the gateway as ``name``.

    Status: pending -> deploying -> running | failed; deleting -> deleted. ``endpoint`` says where
    the gateway finds it: ``{"provider": <a provider table as in the config file>, "deployment":
    <Serve deployment, local runtimes>}`` (``type = "local"`` on the local cluster, ``"openai"`` at
    the RayService's Serve service on Kubernetes); ``registered`` says the gateway routes it.
    ``version`` is bumped on every change (optimistic locking, and the gateway's route source
    watches max(updated_at)).
    """

    __tablename__ = "deployments"
    __table_args__ = (
        # one live deployment per served name; deleted ones keep their rows
        Index("uq_deployments_live_name", "name", unique=True,
              sqlite_where=text("deleted_at IS NULL"), postgresql_where=text("deleted_at IS NULL")),
    )  # fmt: skip

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("dep"))
    name: Mapped[str] = mapped_column(String(128))
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"), index=True)
    cluster_id: Mapped[str] = mapped_column(ForeignKey("clusters.id"), index=True)
    project_id: Mapped[str | None] = mapped_column(ForeignKey("projects.id"), index=True)
    created_by: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    engine: Mapped[str] = mapped_column(String(8))  # "cpu" | "vllm"
    request: Mapped[dict] = mapped_column(JSON, default=dict)  # SLOs, workload, given settings
    config: Mapped[dict | None] = mapped_column(JSON(none_as_null=True))  # the chosen configuration
    predicted: Mapped[dict | None] = mapped_column(JSON(none_as_null=True))
    measured: Mapped[dict | None] = mapped_column(JSON(none_as_null=True))
    pricing: Mapped[dict | None] = mapped_column(JSON(none_as_null=True))  # a [models.X.pricing] table
    endpoint: Mapped[dict | None] = mapped_column(JSON(none_as_null=True))
    registered: Mapped[bool] = mapped_column(Boolean, default=False)
    pipeline_run_id: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(String(4000))
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    model: Mapped[RegisteredModel] = relationship()
    cluster: Mapped[Cluster] = relationship()
