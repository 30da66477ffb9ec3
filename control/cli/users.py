"""``foundry users ...``: who you are, and (admins) the users of the stack.

Example::

    foundry users me
    foundry users create carol@example.com            # matched to her OIDC identity at first sign-in
    foundry users deactivate usr_0123456789ab         # she and her keys get 403 from now on
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from control.cli.admin import DEFAULT_API, ApiKeyOption, ApiUrlOption, JsonOption, _Client, _console, _print_json, _when

UserIdArg = Annotated[str, typer.Argument(help="The user's id, as `foundry users list` shows it.")]


def register(app: typer.Typer) -> None:
    users = typer.Typer(help="Who you are; list, create and deactivate users (admins).", no_args_is_help=True)
    users.command("me")(users_me)
    users.command("list")(users_list)
    users.command("create")(users_create)
    users.command("deactivate")(users_deactivate)
    users.command("activate")(users_activate)
    app.add_typer(users, name="users")


def users_me(as_json: JsonOption = False, api: ApiUrlOption = DEFAULT_API, api_key: ApiKeyOption = None) -> None:
    """Who the credentials belong to, their projects and roles, and their permissions."""
    me = _Client(api, api_key).call("GET", "/users/me")
    if as_json:
        _print_json(me)
        return
    who = me["email"] or me["sub"] or "an admin key"
    typer.echo(f"{who}{' (admin)' if me['is_admin'] else ''}")
    for project in me["projects"]:
        typer.echo(f"  {project['name']}: {project['role']}")
    typer.echo("permissions: " + (", ".join(me["permissions"]) or "none"))


def users_list(as_json: JsonOption = False, api: ApiUrlOption = DEFAULT_API, api_key: ApiKeyOption = None) -> None:
    """List users (admins)."""
    users = _Client(api, api_key).call("GET", "/users")["data"]
    if as_json:
        _print_json(users)
        return
    table = Table(title="Users")
    for column in ("id", "email", "sub", "name", "admin", "status", "created"):
        table.add_column(column, overflow="fold")
    for u in users:
        table.add_row(
            u["id"], u["email"] or "", u["sub"] or "(not signed in yet)", u["name"] or "",
            "yes" if u["is_admin"] else "", "active" if u["is_active"] else "deactivated", _when(u["created_at"]),
        )  # fmt: skip
    _console().print(table)


def users_create(
    email: Annotated[str, typer.Argument(help="Matched to the OIDC identity with this email at first sign-in.")],
    admin: Annotated[bool, typer.Option("--admin", help="Make the user a global admin.")] = False,
    as_json: JsonOption = False,
    api: ApiUrlOption = DEFAULT_API,
    api_key: ApiKeyOption = None,
) -> None:
    """Create a user ahead of their first sign-in (admins)."""
    user = _Client(api, api_key).call("POST", "/users", json={"email": email, "is_admin": admin})
    if as_json:
        _print_json(user)
        return
    typer.echo(f"created user {user['id']} ({user['email']}){' as admin' if user['is_admin'] else ''}")


def users_deactivate(
    user_id: UserIdArg, as_json: JsonOption = False, api: ApiUrlOption = DEFAULT_API, api_key: ApiKeyOption = None
) -> None:
    """Deactivate a user: they and their API keys get 403 (admins)."""
    _set_active(user_id, False, as_json, api, api_key)


def users_activate(
    user_id: UserIdArg, as_json: JsonOption = False, api: ApiUrlOption = DEFAULT_API, api_key: ApiKeyOption = None
) -> None:
    """Reactivate a user (admins)."""
    _set_active(user_id, True, as_json, api, api_key)


def _set_active(user_id: str, active: bool, as_json: bool, api: str, api_key: str | None) -> None:
    user = _Client(api, api_key).call("PATCH", f"/users/{user_id}", json={"is_active": active})
    if as_json:
        _print_json(user)
        return
    typer.echo(f"{'activated' if active else 'deactivated'} user {user['id']} ({user['email'] or user['sub']})")
