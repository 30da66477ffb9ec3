"""Who may do what: the one role -> permission table and the one dependency that checks it.

Permissions are ``module:scope`` strings. A caller is a global admin (every permission, every
project) or a user with a role in some projects; an API key acts for its owner, bounded by the
owner's current role in the key's own project. The table:

=================== ======= ======= ====== ======
permission          admin   owner   member viewer
=================== ======= ======= ====== ======
project:view        yes     yes     yes    yes
project:create      yes
project:manage      yes     yes
key:view            yes     yes     yes    yes
key:manage          yes     yes     own
model:view          yes     yes     yes    yes
model:manage        yes
deployment:view     yes     yes     yes    yes
deployment:manage   yes     yes     yes
cluster:view        yes
cluster:manage      yes
usage:view          yes     yes     yes    yes
user:view           yes
user:manage         yes
audit:view          yes
=================== ======= ======= ====== ======

("own": a member manages the keys it owns, not its colleagues'.)

Every route declares its permission with :func:`authorize`, which authenticates the caller
(an API key, or an OIDC token when ``[auth]`` is configured) and refuses with 403 a caller that
holds the permission in no project. The route then narrows to one project with
:meth:`Access.check`: a caller with no role there gets the resource's 404 (no existence leak),
a role without the permission gets 403. Example::

    @router.patch("/keys/{key_id}", dependencies=...)
    async def update_key(key_id: str, access: Annotated[Access, authorize("key:manage")]): ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from control.errors import AuthenticationFailed, NotFound, PermissionDenied


class Role(StrEnum):
    """A user's role in one project."""

    OWNER = "owner"
    MEMBER = "member"
    VIEWER = "viewer"


PERMISSIONS: tuple[str, ...] = (
    "project:view",
    "project:create",
    "project:manage",
    "key:view",
    "key:manage",
    "model:view",
    "model:manage",
    "deployment:view",
    "deployment:manage",
    "cluster:view",
    "cluster:manage",
    "usage:view",
    "user:view",
    "user:manage",
    "audit:view",
)

_VIEW = frozenset({"project:view", "key:view", "model:view", "deployment:view", "usage:view"})

ROLE_PERMISSIONS: dict[Role, frozenset[str]] = {
    Role.OWNER: _VIEW | {"project:manage", "key:manage", "deployment:manage"},
    Role.MEMBER: _VIEW | {"key:manage", "deployment:manage"},
    Role.VIEWER: _VIEW,
}
"""What each project role grants in its project. Global admins hold every permission."""

OWN_KEYS_ONLY: frozenset[Role] = frozenset({Role.MEMBER})
"""Roles whose ``key:manage`` covers only the keys they own."""


def permissions_of(role: Role | str | None, *, is_admin: bool = False) -> frozenset[str]:
    """The permissions a role grants (every one for a global admin).

    >>> sorted(permissions_of("viewer"))
    ['deployment:view', 'key:view', 'model:view', 'project:view', 'usage:view']
    >>> "audit:view" in permissions_of(None, is_admin=True)
    True
    """
    if is_admin:
        return frozenset(PERMISSIONS)
    if role is None:
        return frozenset()
    return ROLE_PERMISSIONS[Role(role)]


@dataclass(frozen=True)
class Caller:
    """Who is calling, as far as permissions go.

    ``roles`` maps project id -> role. A key caller has at most its own project there, with its
    owner's role; an admin key of no project (``key_project_id`` None) is a global admin.
    """

    actor: str  # "user:usr_..." or "key:key_..."; what the audit log records
    user_id: str | None
    is_admin: bool
    roles: dict[str, Role] = field(default_factory=dict)
    key_project_id: str | None = None  # set when the caller is an API key bound to a project

    def role(self, project_id: str) -> Role | None:
        return self.roles.get(project_id)

    def can(self, permission: str, project_id: str | None = None) -> bool:
        """Holds ``permission`` in ``project_id``, or anywhere when None."""
        if self._admin_here(project_id):
            return True
        if project_id is None:
            return any(permission in ROLE_PERMISSIONS[r] for r in self.roles.values())
        return permission in permissions_of(self.roles.get(project_id))

    def permissions(self) -> list[str]:
        """Every permission held somewhere, in table order (``GET /users/me``)."""
        return [p for p in PERMISSIONS if self.can(p)]

    def projects_with(self, permission: str) -> set[str] | None:
        """Project ids where ``permission`` is held; None means every project (an admin)."""
        if self.is_admin and self.key_project_id is None:
            return None
        if self.is_admin:
            return {self.key_project_id}
        return {p for p, r in self.roles.items() if permission in ROLE_PERMISSIONS[r]}

    def _admin_here(self, project_id: str | None) -> bool:
        if not self.is_admin:
            return False
        return self.key_project_id is None or project_id in (None, self.key_project_id)


@dataclass(frozen=True)
class Access:
    """A caller holding ``permission`` somewhere; :meth:`check` narrows it to one project."""

    caller: Caller
    permission: str
    request_id: str | None = None

    def check(self, project_id: str, missing: Callable[[], Exception]) -> None:
        """Allow the permission in ``project_id``; a caller with no role there gets
        ``missing()`` (the resource's own 404), one whose role lacks it gets 403."""
        if self.caller.can(self.permission, project_id):
            return
        if not self.caller._admin_here(project_id) and self.caller.role(project_id) is None:
            raise missing()
        raise PermissionDenied(
            f"your role in this project does not allow {self.permission}", code="permission_denied"
        )

    def check_key_owner(self, project_id: str, owner_id: str | None) -> None:
        """Members manage only their own keys (:data:`OWN_KEYS_ONLY`)."""
        if self.caller._admin_here(project_id):
            return
        role = self.caller.role(project_id)
        if role in OWN_KEYS_ONLY and (owner_id is None or owner_id != self.caller.user_id):
            raise PermissionDenied("members may change only the keys they own", code="permission_denied")

    def projects(self) -> set[str] | None:
        """Project ids the permission covers; None: all (admin). For filtering lists."""
        return self.caller.projects_with(self.permission)


_bearer = HTTPBearer(auto_error=False, description="an API key (sk-fnd-...) or an OIDC token from the issuer")

AUTHENTICATED = "authenticated"
"""The permission of routes any signed-in caller may use (``GET /users/me``)."""


def authorize(permission: str) -> Any:
    """The dependency of a route that needs ``permission`` (or :data:`AUTHENTICATED`).

    It authenticates the bearer token with ``request.app.state.authenticate(request, token)``
    (set by :func:`control.app.create_app`), refuses a caller holding ``permission`` in no
    project (403), and hands the route an :class:`Access`. Use it as a parameter type::

        access: Annotated[Access, authorize("key:view")]
    """
    if permission != AUTHENTICATED and permission not in PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}; add it to control.permissions.PERMISSIONS")

    async def dependency(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> Access:
        if credentials is None:
            raise AuthenticationFailed(
                "missing credentials: send 'Authorization: Bearer <API key or OIDC token>'", code="missing_api_key"
            )
        caller: Caller = await request.app.state.authenticate(request, credentials.credentials)
        request.state.caller = caller
        if permission != AUTHENTICATED and not caller.can(permission):
            raise PermissionDenied(f"this needs the permission {permission}, which you hold in no project",
                                   code="permission_denied")
        return Access(caller, permission, getattr(request.state, "request_id", None))

    dependency.foundry_permission = permission  # type: ignore[attr-defined]
    return Depends(dependency)


def project_not_found(ref: str) -> Callable[[], Exception]:
    return lambda: NotFound(f"no project named {ref!r}", param="project", code="project_not_found")


def api_routes(app: Any) -> list[Any]:
    """Every API route of ``app`` (included routers flattened), each with ``path_format``,
    ``methods`` and ``dependant``."""
    try:
        from fastapi.routing import iter_route_contexts  # FastAPI >= 0.140 nests included routers
    except ImportError:
        return [r for r in app.routes if getattr(r, "dependant", None) is not None]
    return [c for c in iter_route_contexts(app.routes) if getattr(c, "dependant", None) is not None]


def route_permission(route: Any) -> str | None:
    """The permission a FastAPI route checks through :func:`authorize`, or None if it checks none."""
    pending = [route.dependant]
    while pending:
        dependant = pending.pop()
        permission = getattr(dependant.call, "foundry_permission", None)
        if permission is not None:
            return permission
        pending.extend(dependant.dependencies)
    return None
