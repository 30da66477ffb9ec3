"""The role -> permission table and the caller logic built on it (no database, no HTTP)."""

from __future__ import annotations

import pytest

from control.errors import NotFound, PermissionDenied
from control.permissions import (
    OWN_KEYS_ONLY,
    PERMISSIONS,
    ROLE_PERMISSIONS,
    Access,
    Caller,
    Role,
    authorize,
    permissions_of,
)

WRITES = {p for p in PERMISSIONS if p.endswith(":manage") or p.endswith(":create")}


def test_viewers_only_read_and_roles_nest() -> None:
    assert not ROLE_PERMISSIONS[Role.VIEWER] & WRITES
    assert ROLE_PERMISSIONS[Role.VIEWER] < ROLE_PERMISSIONS[Role.MEMBER] < ROLE_PERMISSIONS[Role.OWNER]
    assert {"key:manage", "deployment:manage", "usage:view"} <= ROLE_PERMISSIONS[Role.MEMBER]
    assert "project:manage" in ROLE_PERMISSIONS[Role.OWNER] and "project:manage" not in ROLE_PERMISSIONS[Role.MEMBER]
    assert OWN_KEYS_ONLY == {Role.MEMBER}


def test_global_permissions_are_for_admins_only() -> None:
    admin_only = {"project:create", "model:manage", "cluster:view", "cluster:manage", "user:view", "user:manage", "audit:view"}
    for role in Role:
        assert not ROLE_PERMISSIONS[role] & admin_only, role
    assert permissions_of(None, is_admin=True) == frozenset(PERMISSIONS)


def test_permissions_are_module_scope_strings_from_the_table() -> None:
    for permission in PERMISSIONS:
        module, _, scope = permission.partition(":")
        assert module and scope in {"view", "manage", "create"}
    for perms in ROLE_PERMISSIONS.values():
        assert perms <= set(PERMISSIONS)
    with pytest.raises(ValueError, match="unknown permission"):
        authorize("keys:delete")


def missing() -> Exception:
    return NotFound("no such thing", code="thing_not_found")


def test_a_member_is_checked_per_project() -> None:
    caller = Caller(actor="user:u1", user_id="u1", is_admin=False, roles={"p1": Role.MEMBER, "p2": Role.VIEWER})
    assert caller.can("key:manage") and caller.can("key:manage", "p1") and not caller.can("key:manage", "p2")
    assert caller.permissions() == [p for p in PERMISSIONS if p in ROLE_PERMISSIONS[Role.MEMBER]]
    access = Access(caller, "key:manage")
    access.check("p1", missing)
    with pytest.raises(PermissionDenied):
        access.check("p2", missing)  # a viewer there: 403
    with pytest.raises(NotFound, match="no such thing"):
        access.check("p3", missing)  # not a member: the resource's own 404
    assert access.projects() == {"p1"}
    access.check_key_owner("p1", "u1")
    with pytest.raises(PermissionDenied, match="own"):
        access.check_key_owner("p1", "someone-else")


def test_an_admin_key_bound_to_a_project_stays_in_it() -> None:
    everywhere = Caller(actor="key:k0", user_id=None, is_admin=True)
    assert everywhere.can("audit:view") and Access(everywhere, "key:view").projects() is None
    bound = Caller(actor="key:k1", user_id="u1", is_admin=True, key_project_id="p1")
    assert bound.can("key:manage", "p1") and not bound.can("key:manage", "p2")
    assert Access(bound, "key:view").projects() == {"p1"}
