"""Users and their project roles; turning a bearer token into a :class:`~control.permissions.Caller`.

Users come from the OIDC issuer: on first sign-in a user is provisioned from the token (``sub``,
the ``email_claim``, ``name``), or matched by email to a user an admin created ahead. Global admin
comes from ``admin_roles`` in the token's roles claim (re-read on every token) or is granted in
Foundry (``is_admin``). A deactivated user gets 403, and so do the keys it owns.

An API key acts for its owner, bounded by the owner's current role in the key's project: a key
whose owner left the project, or was deactivated, may do nothing (the gateway drops it too; see
:meth:`control.keys.DatabaseKeySource.load_active`).

Every function takes an open session; the ones that change data commit before they return, with
their audit record in the same transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from control import audit as audit_log
from control import keys
from control.errors import AuthenticationFailed, Conflict, InvalidRequest, NotFound, PermissionDenied
from control.models import ApiKey, Project, ProjectMember, User, utcnow
from control.oidc import OidcVerifier, looks_like_jwt
from control.permissions import Caller, Role
from control.schemas import MemberPublic, UserCreate, UserPublic, UserUpdate


class Authenticator:
    """Resolves ``Authorization: Bearer`` credentials: API keys always, OIDC tokens when a
    verifier is given (``[auth]`` configured)."""

    def __init__(self, verifier: OidcVerifier | None) -> None:
        self.verifier = verifier

    async def caller(self, session: AsyncSession, token: str, *, request_id: str | None) -> Caller:
        if self.verifier is not None and looks_like_jwt(token):
            claims = await self.verifier.verify(token)
            return await sign_in(session, claims, self.verifier.settings, request_id=request_id)
        if looks_like_jwt(token):
            raise AuthenticationFailed(
                "this control API has no OIDC issuer configured ([auth]); use an API key", code="oidc_not_configured"
            )
        return await key_caller(session, await keys.authenticate(session, token))


async def sign_in(session: AsyncSession, claims: dict[str, Any], settings: Any, *, request_id: str | None) -> Caller:
    """The caller for verified token ``claims``: provisions or matches the user on first sign-in."""
    sub = str(claims["sub"])
    email = _claim(claims, settings.email_claim)
    email = email.strip().lower() if isinstance(email, str) and "@" in email else None
    name = claims.get("name") if isinstance(claims.get("name"), str) else None
    roles = _claim(claims, settings.roles_claim)
    roles = {r for r in roles if isinstance(r, str)} if isinstance(roles, list) else set()
    idp_admin = bool(roles & set(settings.admin_roles))

    user = await session.scalar(select(User).where(User.sub == sub))
    if user is None:
        user = await _first_sign_in(session, sub, email, name, idp_admin, claims, request_id)
    elif user.idp_admin != idp_admin or (name and user.name != name):
        user.idp_admin, user.name = idp_admin, name or user.name
        user.updated_at = utcnow()
        await session.commit()
    if not user.is_active:
        raise PermissionDenied("this user has been deactivated; ask an admin", code="user_deactivated")
    return await user_caller(session, user, is_admin=user.is_admin or idp_admin)


async def _first_sign_in(
    session: AsyncSession, sub: str, email: str | None, name: str | None, idp_admin: bool, claims: dict, request_id
) -> User:
    now = utcnow()
    user = None
    if email is not None and claims.get("email_verified") is not False:
        user = await session.scalar(select(User).where(User.email == email, User.sub.is_(None)))
    if user is None:
        taken = email is not None and await session.scalar(select(User.id).where(User.email == email)) is not None
        user = User(sub=sub, email=None if taken else email, name=name, is_admin=False, created_at=now)
        session.add(user)
    user.sub, user.name, user.idp_admin, user.last_login_at, user.updated_at = sub, name, idp_admin, now, now
    await session.flush()
    changes = {"sub": sub, "email": user.email, "name": name, "idp_admin": idp_admin}
    await audit_log.append(
        session, actor=f"user:{user.id}", action="user.sign_in", target=f"user:{user.id}", changes=changes,
        request_id=request_id,
    )
    try:
        await session.commit()
    except IntegrityError:  # the same user's first two requests raced: take the one that won
        await session.rollback()
        user = await session.scalar(select(User).where(User.sub == sub))
        assert user is not None
    return user


async def user_caller(session: AsyncSession, user: User, *, is_admin: bool) -> Caller:
    rows = await session.execute(select(ProjectMember.project_id, ProjectMember.role).where(ProjectMember.user_id == user.id))
    return Caller(actor=f"user:{user.id}", user_id=user.id, is_admin=is_admin, roles={p: Role(r) for p, r in rows})


async def key_caller(session: AsyncSession, key: ApiKey) -> Caller:
    """A key's caller: its owner's role, in the key's project only. Unowned keys: admin keys are
    global admins; others (made before users existed) may only call the gateway."""
    actor = f"key:{key.id}"
    if key.owner_id is None:
        return Caller(actor=actor, user_id=None, is_admin=key.is_admin)
    owner = await session.get(User, key.owner_id)
    if owner is None or not owner.is_active:
        raise PermissionDenied("the owner of this API key has been deactivated", code="user_deactivated")
    role = await session.scalar(
        select(ProjectMember.role).where(ProjectMember.user_id == owner.id, ProjectMember.project_id == key.project_id)
    )
    roles = {key.project_id: Role(role)} if role is not None else {}
    is_admin = key.is_admin or owner.is_admin or owner.idp_admin
    return Caller(actor=actor, user_id=owner.id, is_admin=is_admin, roles=roles, key_project_id=key.project_id)


def _claim(claims: dict[str, Any], path: str) -> Any:
    """``realm_access.roles`` -> ``claims["realm_access"]["roles"]``; a top-level claim named
    with dots wins."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


# --- users ---------------------------------------------------------------------------------


async def list_users(session: AsyncSession) -> list[UserPublic]:
    rows = await session.scalars(select(User).order_by(User.created_at, User.id))
    return [UserPublic.model_validate(u) for u in rows]


async def create_user(session: AsyncSession, spec: UserCreate, *, audit: audit_log.Audit) -> UserPublic:
    """A user created ahead by email, matched on first sign-in; :class:`Conflict` if taken."""
    email = spec.email.lower()
    if await session.scalar(select(User.id).where(User.email == email)) is not None:
        raise Conflict(f"a user with email {email!r} already exists", param="email", code="user_exists")
    now = utcnow()
    user = User(email=email, is_admin=spec.is_admin, is_active=True, created_at=now, updated_at=now)
    session.add(user)
    await session.flush()
    await audit.append(session, "user.create", f"user:{user.id}", changes={"email": email, "is_admin": spec.is_admin})
    try:
        await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        raise Conflict(f"a user with email {email!r} already exists", param="email", code="user_exists") from exc
    return UserPublic.model_validate(user)


async def update_user(session: AsyncSession, user_id: str, spec: UserUpdate, *, audit: audit_log.Audit) -> UserPublic:
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user with id {user_id!r}", param="user_id", code="user_not_found")
    changes = {f: v for f, v in spec.model_dump(include=spec.model_fields_set).items() if getattr(user, f) != v}
    if None in changes.values():
        raise InvalidRequest("is_active and is_admin cannot be null", param=next(f for f, v in changes.items() if v is None))
    if changes:
        for field, value in changes.items():
            setattr(user, field, value)
        user.updated_at = utcnow()
        await _touch_keys(session, ApiKey.owner_id == user.id)  # gateways re-read the user's keys
        await audit.append(session, "user.update", f"user:{user.id}", changes=changes)
        await session.commit()
    return UserPublic.model_validate(user)


async def find_user(session: AsyncSession, ref: str) -> User | None:
    """The user with this id, ``sub`` or email."""
    return await session.scalar(
        select(User).where(or_(User.id == ref, User.sub == ref, User.email == ref.lower())).limit(1)
    )


# --- members -------------------------------------------------------------------------------


async def list_members(session: AsyncSession, project: Project) -> list[MemberPublic]:
    rows = await session.execute(
        select(ProjectMember, User)
        .join(User, ProjectMember.user_id == User.id)
        .where(ProjectMember.project_id == project.id)
        .order_by(ProjectMember.created_at, User.id)
    )
    return [_member(project, m, u) for m, u in rows]


async def set_member(
    session: AsyncSession, project: Project, user_ref: str, role: Role, *, audit: audit_log.Audit,
    limits: dict[str, Any] | None = None,
) -> tuple[MemberPublic, bool]:
    """Give ``user_ref`` (email or sub; an unknown email is created ahead) ``role`` in
    ``project``, and the member ``limits`` given (of :data:`control.schemas.MEMBER_LIMIT_FIELDS`;
    the others stay); returns the membership and whether it is new."""
    user = await find_user(session, user_ref)
    if user is None:
        if "@" not in user_ref:
            raise NotFound(f"no user with sub or email {user_ref!r}", param="user", code="user_not_found")
        now = utcnow()
        user = User(email=user_ref.lower(), is_admin=False, is_active=True, created_at=now, updated_at=now)
        session.add(user)
        await session.flush()
        await audit.append(session, "user.create", f"user:{user.id}", changes={"email": user.email, "is_admin": False})
    member = await session.get(ProjectMember, (project.id, user.id))
    created = member is None
    limits = limits or {}
    if member is None:
        member = ProjectMember(project_id=project.id, user_id=user.id, role=role.value, created_at=utcnow(), **limits)
        session.add(member)
        changes = {"role": role.value} | {f: v for f, v in limits.items() if v is not None}
        await audit.append(session, "member.add", f"user:{user.id}", project_id=project.id, changes=changes)
    else:
        await _change_member(session, project, member, {"role": role.value, **limits}, audit=audit)
    await session.commit()
    return _member(project, member, user), created


async def update_member(
    session: AsyncSession, project: Project, user_ref: str, changes: dict[str, Any], *, audit: audit_log.Audit
) -> MemberPublic:
    """Change a member's role and/or limits (``changes``: the fields to set, None clears a
    limit); :class:`NotFound` if ``user_ref`` (id, email or sub) is not a member."""
    user, member = await _membership(session, project, user_ref)
    await _change_member(session, project, member, changes, audit=audit)
    await session.commit()
    return _member(project, member, user)


async def _change_member(
    session: AsyncSession, project: Project, member: ProjectMember, changes: dict[str, Any], *, audit: audit_log.Audit
) -> None:
    """Apply the fields of ``changes`` that differ, audit them as ``{"from", "to"}`` and make the
    gateways reload the member's keys there (its role bounds them; its limits apply to them)."""
    if changes.get("role") is not None:
        changes = changes | {"role": Role(changes["role"]).value}
    elif "role" in changes:
        raise InvalidRequest("role cannot be null", param="role")
    diff = {f: {"from": getattr(member, f), "to": v} for f, v in changes.items() if getattr(member, f) != v}
    if not diff:
        return
    for field, change in diff.items():
        setattr(member, field, change["to"])
    await audit.append(session, "member.update", f"user:{member.user_id}", project_id=project.id, changes=diff)
    await _touch_keys(session, ApiKey.owner_id == member.user_id, ApiKey.project_id == project.id)


async def remove_member(session: AsyncSession, project: Project, user_ref: str, *, audit: audit_log.Audit) -> None:
    """Remove ``user_ref`` (id, email or sub) from ``project``; its keys there stop working."""
    user, member = await _membership(session, project, user_ref)
    await session.delete(member)
    await _touch_keys(session, ApiKey.owner_id == user.id, ApiKey.project_id == project.id)
    await audit.append(session, "member.remove", f"user:{user.id}", project_id=project.id, changes={"role": member.role})
    await session.commit()


async def _membership(session: AsyncSession, project: Project, user_ref: str) -> tuple[User, ProjectMember]:
    user = await find_user(session, user_ref)
    member = await session.get(ProjectMember, (project.id, user.id)) if user is not None else None
    if member is None or user is None:
        raise NotFound(
            f"{user_ref!r} is not a member of project {project.name!r}", param="user", code="member_not_found"
        )
    return user, member


async def projects_of(session: AsyncSession, caller: Caller, user: User | None) -> list[dict]:
    """``[{"id", "name", "role"}]`` for ``GET /users/me``."""
    if not caller.roles:
        return []
    rows = await session.execute(select(Project.id, Project.name).where(Project.id.in_(caller.roles)).order_by(Project.name))
    return [{"id": pid, "name": name, "role": caller.roles[pid].value} for pid, name in rows]


async def _touch_keys(session: AsyncSession, *where) -> None:
    """Bump ``updated_at`` of the keys matched, so gateways reload them (their fingerprint)."""
    await session.execute(update(ApiKey).where(*where).values(updated_at=utcnow()))


def _member(project: Project, member: ProjectMember, user: User) -> MemberPublic:
    return MemberPublic(
        project_id=project.id, user_id=user.id, email=user.email, sub=user.sub, role=member.role,
        rpm=member.rpm, tpm=member.tpm, budget_tokens=member.budget_tokens, budget_usd=member.budget_usd,
        budget_period=member.budget_period, created_at=member.created_at,
    )
