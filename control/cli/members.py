"""``foundry projects members add|list|remove``: who may do what in a project.

Example::

    foundry projects members add team-a alice@example.com --role owner
    foundry projects members list team-a
    foundry projects members remove team-a alice@example.com
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer
from rich.table import Table

from control.cli.admin import DEFAULT_API, ApiKeyOption, ApiUrlOption, JsonOption, _Client, _console, _print_json, _when

ProjectArg = Annotated[str, typer.Argument(help="The project's name or id.")]
UserArg = Annotated[str, typer.Argument(help="The user's email or OIDC sub (remove: also its id).")]


class RoleChoice(str, Enum):
    owner = "owner"
    member = "member"
    viewer = "viewer"


def register(projects: typer.Typer) -> None:
    members = typer.Typer(help="Add, list and remove a project's members and their roles.", no_args_is_help=True)
    members.command("add")(members_add)
    members.command("list")(members_list)
    members.command("remove")(members_remove)
    projects.add_typer(members, name="members")


def members_add(
    project: ProjectArg,
    user: UserArg,
    role: Annotated[RoleChoice, typer.Option("--role", help="owner, member or viewer.")] = RoleChoice.member,
    as_json: JsonOption = False,
    api: ApiUrlOption = DEFAULT_API,
    api_key: ApiKeyOption = None,
) -> None:
    """Give a user a role in a project (an unknown email is created, matched at first sign-in)."""
    member = _Client(api, api_key).call("POST", f"/projects/{project}/members", json={"user": user, "role": role.value})
    if as_json:
        _print_json(member)
        return
    typer.echo(f"{member['email'] or member['sub']} is {member['role']} of project {project}")


def members_list(
    project: ProjectArg, as_json: JsonOption = False, api: ApiUrlOption = DEFAULT_API, api_key: ApiKeyOption = None
) -> None:
    """List a project's members and their roles."""
    members = _Client(api, api_key).call("GET", f"/projects/{project}/members")["data"]
    if as_json:
        _print_json(members)
        return
    table = Table(title=f"Members of {project}")
    for column in ("user id", "email", "sub", "role", "since"):
        table.add_column(column, overflow="fold")
    for m in members:
        table.add_row(m["user_id"], m["email"] or "", m["sub"] or "", m["role"], _when(m["created_at"]))
    _console().print(table)


def members_remove(
    project: ProjectArg, user: UserArg, api: ApiUrlOption = DEFAULT_API, api_key: ApiKeyOption = None
) -> None:
    """Remove a member; its API keys in the project stop working within seconds."""
    _Client(api, api_key).call("DELETE", f"/projects/{project}/members/{user}")
    typer.echo(f"removed {user} from project {project}")
