"""``foundry projects members add|list|set|remove``: who may do what in a project, within which
limits (shared by every key the member owns in the project, on top of each key's own).

Example::

    foundry projects members add team-a alice@example.com --role owner
    foundry projects members add team-a bob@example.com --rpm 60 --budget-usd 20
    foundry projects members set team-a bob@example.com --budget-usd 50 --clear rpm
    foundry projects members list team-a
    foundry projects members remove team-a alice@example.com
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer
from rich.table import Table

from control.cli.admin import (
    DEFAULT_API,
    ApiKeyOption,
    ApiUrlOption,
    BudgetPeriodOption,
    BudgetTokensOption,
    BudgetUsdOption,
    JsonOption,
    _budget,
    _budget_body,
    _Client,
    _console,
    _fail,
    _limit,
    _patch_body,
    _print_json,
    _when,
)

ProjectArg = Annotated[str, typer.Argument(help="The project's name or id.")]
UserArg = Annotated[str, typer.Argument(help="The user's email or OIDC sub (remove: also its id).")]


class RoleChoice(str, Enum):
    owner = "owner"
    member = "member"
    viewer = "viewer"


class MemberField(str, Enum):
    rpm = "rpm"
    tpm = "tpm"
    budget_tokens = "budget-tokens"
    budget_usd = "budget-usd"


RpmOption = Annotated[int | None, typer.Option("--rpm", help="Requests per minute across the member's keys.")]
TpmOption = Annotated[int | None, typer.Option("--tpm", help="Tokens per minute across the member's keys.")]


def register(projects: typer.Typer) -> None:
    members = typer.Typer(help="Add, list and remove a project's members and their roles.", no_args_is_help=True)
    members.command("add")(members_add)
    members.command("list")(members_list)
    members.command("set")(members_set)
    members.command("remove")(members_remove)
    projects.add_typer(members, name="members")


def members_add(
    project: ProjectArg,
    user: UserArg,
    role: Annotated[RoleChoice, typer.Option("--role", help="owner, member or viewer.")] = RoleChoice.member,
    rpm: RpmOption = None,
    tpm: TpmOption = None,
    budget_tokens: BudgetTokensOption = None,
    budget_usd: BudgetUsdOption = None,
    budget_period: BudgetPeriodOption = None,
    as_json: JsonOption = False,
    api: ApiUrlOption = DEFAULT_API,
    api_key: ApiKeyOption = None,
) -> None:
    """Give a user a role in a project (an unknown email is created, matched at first sign-in),
    and limits shared by every key it owns there."""
    body = {"user": user, "role": role.value, **_limits_body(rpm, tpm, budget_tokens, budget_usd, budget_period)}
    member = _Client(api, api_key).call("POST", f"/projects/{project}/members", json=body)
    if as_json:
        _print_json(member)
        return
    typer.echo(f"{member['email'] or member['sub']} is {member['role']} of project {project}{_shown_limits(member)}")


def members_set(
    project: ProjectArg,
    user: UserArg,
    role: Annotated[RoleChoice | None, typer.Option("--role", help="A new role: owner, member or viewer.")] = None,
    rpm: RpmOption = None,
    tpm: TpmOption = None,
    budget_tokens: BudgetTokensOption = None,
    budget_usd: BudgetUsdOption = None,
    budget_period: BudgetPeriodOption = None,
    clear: Annotated[
        list[MemberField] | None,
        typer.Option(
            "--clear", metavar="FIELD", help="Remove a limit: rpm, tpm, budget-tokens or budget-usd. Repeat for more."
        ),
    ] = None,
    as_json: JsonOption = False,
    api: ApiUrlOption = DEFAULT_API,
    api_key: ApiKeyOption = None,
) -> None:
    """Change a member's role or limits; what is not given stays. The limits bound every key the
    member owns in the project together (each key's own limits apply too); gateways apply them
    within seconds."""
    changes = {"role": role.value if role else None, **_limits_body(rpm, tpm, budget_tokens, budget_usd, budget_period)}
    body = _patch_body(clear, changes)
    if not body:
        _fail("nothing to change: give --role, --rpm, --tpm, --budget-*, or --clear")
    member = _Client(api, api_key).call("PATCH", f"/projects/{project}/members/{user}", json=body)
    if as_json:
        _print_json(member)
        return
    typer.echo(f"{member['email'] or member['sub']} is {member['role']} of project {project}{_shown_limits(member)}")


def _limits_body(rpm, tpm, budget_tokens, budget_usd, budget_period) -> dict:  # noqa: ANN001 - the options above
    limits = {"rpm": rpm, "tpm": tpm, **_budget_body(budget_tokens, budget_usd, budget_period)}
    return {k: v for k, v in limits.items() if v is not None}


def _shown_limits(member: dict) -> str:
    parts = [f"{name} {member[name]}" for name in ("rpm", "tpm") if member.get(name) is not None]
    if budget := _budget(member):
        parts.append(f"budget {budget}")
    return f", limits: {'; '.join(parts)}" if parts else ""


def members_list(
    project: ProjectArg, as_json: JsonOption = False, api: ApiUrlOption = DEFAULT_API, api_key: ApiKeyOption = None
) -> None:
    """List a project's members and their roles."""
    members = _Client(api, api_key).call("GET", f"/projects/{project}/members")["data"]
    if as_json:
        _print_json(members)
        return
    table = Table(title=f"Members of {project}")
    for column in ("user id", "email", "sub", "role", "rpm", "tpm", "budget", "since"):
        table.add_column(column, overflow="fold")
    for m in members:
        table.add_row(
            m["user_id"], m["email"] or "", m["sub"] or "", m["role"], _limit(m.get("rpm")), _limit(m.get("tpm")),
            _budget(m) or "-", _when(m["created_at"]),
        )  # fmt: skip
    _console().print(table)


def members_remove(
    project: ProjectArg, user: UserArg, api: ApiUrlOption = DEFAULT_API, api_key: ApiKeyOption = None
) -> None:
    """Remove a member; its API keys in the project stop working within seconds."""
    _Client(api, api_key).call("DELETE", f"/projects/{project}/members/{user}")
    typer.echo(f"removed {user} from project {project}")
