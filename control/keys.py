"""API keys: creating, listing, updating and revoking them, and serving them to the gateway.

Only :func:`serve.auth.hash_key` of a secret is stored. :func:`create_key` returns the secret
once, in :class:`~control.schemas.KeyCreated`; nothing else ever sees it again.

:class:`DatabaseKeySource` is the gateway's view of the table (:class:`serve.auth.KeySource`);
:func:`bootstrap_admin` makes sure the stack starts with an admin key.

Example::

    async with sessions() as session:
        created = await create_key(session, KeyCreate(project="my-app", rpm=60, budget_usd=20))
        print(created.key)          # shown once
        await update_key(session, created.id, KeyUpdate(model_limits={"chat-main": {"rpm": 10}}))
        await regenerate_key(session, created.id)   # a new secret; same id, limits and spend
        await revoke_key(session, created.id)
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from control.db import ReplicaDatabase, create_engine, create_sessionmaker
from control.audit import Audit
from control.errors import AuthenticationFailed, BootstrapError, Conflict, InvalidRequest, NotFound
from control.models import ApiKey, Project, ProjectMember, User, utcnow
from control.projects import ensure_project, find_project
from control.schemas import KeyCreate, KeyCreated, KeyPublic, KeyUpdate, RateLimits
from serve.auth import ApiKeyInfo, Budget, MemberLimits, ModelLimit, display_prefix, hash_key, new_key

ADMIN_PROJECT = "admin"
DEFAULT_PROJECT = "default"


async def create_key(
    session: AsyncSession, spec: KeyCreate, *, owner_id: str | None = None, audit: Audit | None = None
) -> KeyCreated:
    """A new key in project ``spec.project`` (created if missing), acting for user ``owner_id``.
    The result holds the secret; the audit record does not."""
    now = utcnow()
    expires_at = spec.expires_at
    if spec.expires_in_days is not None:
        expires_at = now + timedelta(days=spec.expires_in_days)
    elif expires_at is not None and expires_at <= now:
        raise InvalidRequest("expires_at must be in the future", param="expires_at")
    existed = await session.scalar(select(Project.id).where(Project.name == spec.project))
    project = await ensure_project(session, spec.project)
    if audit is not None and existed is None:
        await audit.append(session, "project.create", f"project:{project.id}", project_id=project.id,
                           changes={"name": project.name})  # fmt: skip
    secret = new_key()
    key = ApiKey(
        project=project,
        owner_id=owner_id,
        name=spec.name,
        prefix=display_prefix(secret),
        key_hash=hash_key(secret),
        is_admin=False,
        models=spec.models,
        rpm=spec.rpm,
        tpm=spec.tpm,
        model_limits=_stored_model_limits(spec.model_limits),
        budget_tokens=spec.budget_tokens,
        budget_usd=spec.budget_usd,
        budget_period=spec.budget_period,
        expires_at=expires_at,
        created_at=now,
        updated_at=now,
    )
    session.add(key)
    await session.flush()
    if audit is not None:
        changes = spec.model_dump(exclude_none=True) | {"owner_id": owner_id, "prefix": key.prefix}
        await audit.append(session, "key.create", f"key:{key.id}", project_id=project.id, changes=changes)
    await session.commit()
    return KeyCreated(**public_key(key).model_dump(), key=secret)


async def get_key(session: AsyncSession, key_id: str) -> ApiKey:
    """The key with id ``key_id``, revoked or not; :class:`NotFound` if unknown."""
    key = await session.get(ApiKey, key_id, options=[selectinload(ApiKey.project)])
    if key is None:
        raise key_not_found(key_id)
    return key


def key_not_found(key_id: str) -> NotFound:
    return NotFound(f"no API key with id {key_id!r}", param="key_id", code="key_not_found")


async def update_key(session: AsyncSession, key_id: str, spec: KeyUpdate, *, audit: Audit | None = None) -> KeyPublic:
    """Change the fields given in ``spec`` (``None`` clears); gateways follow within their
    refresh interval. :class:`NotFound` if unknown, :class:`Conflict` if revoked."""
    key = await get_key(session, key_id)
    if key.revoked_at is not None:
        raise Conflict(f"API key {key_id!r} has been revoked; create a new key", param="key_id", code="key_revoked")
    changes = spec.model_dump(include=spec.model_fields_set)
    if "model_limits" in changes:
        changes["model_limits"] = _stored_model_limits(spec.model_limits)
    if changes:
        for field, value in changes.items():
            setattr(key, field, value)
        key.updated_at = utcnow()
        if audit is not None:
            await audit.append(session, "key.update", f"key:{key.id}", project_id=key.project_id, changes=changes)
        await session.commit()
    return public_key(key)


async def list_keys(
    session: AsyncSession, *, project: str | None = None, project_ids: set[str] | None = None
) -> list[KeyPublic]:
    """Every key, revoked ones included, oldest first; only of ``project`` (name or id) if given,
    and only of ``project_ids`` unless None (every project)."""
    query = select(ApiKey).options(selectinload(ApiKey.project)).order_by(ApiKey.created_at, ApiKey.id)
    if project is not None:
        query = query.where(ApiKey.project_id == (await find_project(session, project)).id)
    if project_ids is not None:
        query = query.where(ApiKey.project_id.in_(project_ids))
    return [public_key(k) for k in await session.scalars(query)]


async def revoke_key(session: AsyncSession, key_id: str, *, audit: Audit | None = None) -> KeyPublic:
    """Revoke the key; revoking a revoked key changes nothing. :class:`NotFound` if unknown."""
    key = await get_key(session, key_id)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        key.updated_at = key.revoked_at
        if audit is not None:
            await audit.append(session, "key.revoke", f"key:{key.id}", project_id=key.project_id, changes={})
        await session.commit()
    return public_key(key)


async def regenerate_key(session: AsyncSession, key_id: str, *, audit: Audit | None = None) -> KeyCreated:
    """A new secret for the same key: the old secret stops working (gateways within their refresh
    interval) and everything else stays, the id included, so the key's spending so far keeps
    counting against its budget (budgets are counted by key id, not by secret). The result holds
    the new secret, shown once. :class:`NotFound` if unknown, :class:`Conflict` if revoked."""
    key = await get_key(session, key_id)
    if key.revoked_at is not None:
        raise Conflict(f"API key {key_id!r} has been revoked; create a new key", param="key_id", code="key_revoked")
    secret = new_key()
    old_prefix = key.prefix
    key.key_hash, key.prefix = hash_key(secret), display_prefix(secret)
    key.updated_at = utcnow()
    if audit is not None:
        changes = {"prefix": {"from": old_prefix, "to": key.prefix}}
        await audit.append(session, "key.regenerate", f"key:{key.id}", project_id=key.project_id, changes=changes)
    await session.commit()
    return KeyCreated(**public_key(key).model_dump(), key=secret)


async def authenticate(session: AsyncSession, secret: str) -> ApiKey:
    """The active key whose secret is ``secret``; :class:`AuthenticationFailed` otherwise."""
    key = await session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(secret)))
    if key is None:
        raise AuthenticationFailed("invalid API key")
    if key.revoked_at is not None:
        raise AuthenticationFailed("this API key has been revoked", code="revoked_api_key")
    if key.expires_at is not None and key.expires_at <= utcnow():
        raise AuthenticationFailed("this API key has expired", code="expired_api_key")
    return key


def public_key(key: ApiKey) -> KeyPublic:
    return KeyPublic(
        id=key.id,
        project_id=key.project_id,
        project=key.project.name,
        owner_id=key.owner_id,
        name=key.name,
        prefix=key.prefix,
        is_admin=key.is_admin,
        models=key.models,
        rpm=key.rpm,
        tpm=key.tpm,
        model_limits=key.model_limits,
        budget_tokens=key.budget_tokens,
        budget_usd=key.budget_usd,
        budget_period=key.budget_period,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
        created_at=key.created_at,
        updated_at=key.updated_at,
    )


class DatabaseKeySource(ReplicaDatabase):
    """:class:`serve.auth.KeySource` over the control database.

    Picklable, with its engine made where it is used (:class:`control.db.ReplicaDatabase`).

    >>> source = DatabaseKeySource("sqlite:///var/foundry.db")
    >>> # await source.fingerprint(); await source.load_active(); await source.close()
    """

    async def fingerprint(self) -> str:
        """Changes when a key is created, revoked or updated, or a project updated (budgets):
        key count, revoked count, last key update, last project update."""
        last_project = select(func.max(Project.updated_at)).scalar_subquery()
        query = select(
            func.count(ApiKey.id), func.count(ApiKey.revoked_at), func.max(ApiKey.updated_at), last_project
        )
        async with self._engine_().connect() as conn:
            total, revoked, last, last_project_change = (await conn.execute(query)).one()
        return f"{total}:{revoked}:{_iso(last)}:{_iso(last_project_change)}"

    async def load_active(self) -> dict[str, ApiKeyInfo]:
        """Every key not revoked, by hash; expired ones too, with ``expires_at`` for the gateway.
        A key with an owner counts only while the owner is active and still a member of the
        key's project (or an admin): removing a member stops its keys here, at no cost on the
        request path. The owner's member limits there come with each key
        (:class:`serve.auth.MemberLimits`), so the gateway enforces them with no query either."""
        owner_allowed = User.is_active.is_(True) & (
            User.is_admin.is_(True) | User.idp_admin.is_(True) | ProjectMember.user_id.is_not(None)
        )
        query = (
            select(ApiKey, Project, User, ProjectMember)
            .join(Project, ApiKey.project_id == Project.id)
            .outerjoin(User, ApiKey.owner_id == User.id)
            .outerjoin(
                ProjectMember,
                (ProjectMember.user_id == ApiKey.owner_id) & (ProjectMember.project_id == ApiKey.project_id),
            )
            .where(ApiKey.revoked_at.is_(None), or_(ApiKey.owner_id.is_(None), owner_allowed))
        )
        async with AsyncSession(self._engine_()) as session:
            rows = (await session.execute(query)).all()
        return {key.key_hash: _info(key, project, _member_limits(project, owner, member))
                for key, project, owner, member in rows}  # fmt: skip



def _member_limits(project: Project, owner: User | None, member: ProjectMember | None) -> MemberLimits | None:
    """The owner's limits in the key's project, if it has any there."""
    if owner is None or member is None:
        return None
    limits = MemberLimits(
        id=f"{member.project_id}:{member.user_id}",
        label=f"member {owner.email or owner.sub or owner.id} of project '{project.name}'",
        rpm=member.rpm,
        tpm=member.tpm,
        budget=_budget(member),
    )
    return limits if limits.limited else None


def _info(key: ApiKey, project: Project, member: MemberLimits | None = None) -> ApiKeyInfo:
    return ApiKeyInfo(
        key_id=key.id,
        project_id=key.project_id,
        project=project.name,
        is_admin=key.is_admin,
        models=tuple(key.models) if key.models is not None else None,
        rpm=key.rpm,
        tpm=key.tpm,
        expires_at=key.expires_at.timestamp() if key.expires_at is not None else None,
        model_limits=tuple(
            ModelLimit(model, limit.get("rpm"), limit.get("tpm"))
            for model, limit in sorted((key.model_limits or {}).items())
        ),
        budget=_budget(key),
        project_budget=_budget(project),
        member=member,
    )


def _budget(row: ApiKey | Project | ProjectMember) -> Budget | None:
    if row.budget_tokens is None and row.budget_usd is None:
        return None
    return Budget(tokens=row.budget_tokens, usd=row.budget_usd, period=row.budget_period)  # type: ignore[arg-type]


def _stored_model_limits(limits: dict[str, RateLimits] | None) -> dict[str, dict[str, int]] | None:
    """The JSON column's form: only the limits set; no entries at all is stored as None."""
    if not limits:
        return None
    return {model: limit.model_dump(exclude_none=True) for model, limit in limits.items()}


def _iso(when) -> str:
    return when.isoformat() if when is not None else "-"


async def bootstrap_admin(url: str, admin_key: str | None) -> str | None:
    """Make sure the "admin" and "default" projects and an active admin key exist.

    - ``admin_key`` given (e.g. ``$FOUNDRY_ADMIN_KEY``): its hash is stored as an admin key
      unless already there; returns None. :class:`BootstrapError` if that key was revoked.
    - not given (None or empty) and no active admin key exists: a new key is generated, only its
      hash stored, and the secret returned for the caller to show once.
    - otherwise: returns None.

    Run :func:`control.db.migrate` first.
    """
    engine = create_engine(url, serialize_writes=True, pool_size=1)
    try:
        async with create_sessionmaker(engine)() as session:
            admin_project = await ensure_project(session, ADMIN_PROJECT)
            await ensure_project(session, DEFAULT_PROJECT)
            secret = admin_key.strip() if admin_key else None
            if secret:
                await _ensure_given_admin(session, admin_project, secret)
                await session.commit()
                return None
            if await _has_active_admin(session):
                await session.commit()
                return None
            secret = new_key()
            session.add(_admin_key(admin_project, secret))
            await session.commit()
            return secret
    finally:
        await engine.dispose()


async def _ensure_given_admin(session: AsyncSession, project: Project, secret: str) -> None:
    existing = await session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(secret)))
    if existing is None:
        session.add(_admin_key(project, secret))
    elif not existing.is_admin:
        raise BootstrapError("the admin key given is already stored as a non-admin key; choose another")
    elif existing.revoked_at is not None:
        raise BootstrapError("the admin key given has been revoked; set a new FOUNDRY_ADMIN_KEY")


async def _has_active_admin(session: AsyncSession) -> bool:
    now = utcnow()
    query = select(ApiKey.id).where(
        ApiKey.is_admin.is_(True),
        ApiKey.revoked_at.is_(None),
        (ApiKey.expires_at.is_(None)) | (ApiKey.expires_at > now),
    )
    return await session.scalar(query.limit(1)) is not None


def _admin_key(project: Project, secret: str) -> ApiKey:
    now = utcnow()
    return ApiKey(
        project=project,
        name="admin",
        prefix=display_prefix(secret),
        key_hash=hash_key(secret),
        is_admin=True,
        created_at=now,
        updated_at=now,
    )
