"""``foundry audit list|verify``: read the control API's audit log and check its hash chain.

``verify`` downloads every record (``GET /api/audit``, paged) and recomputes the chain here, with
:func:`control.audit.verify`: a modified record, a deleted one, or deleted newest records are
reported and the command exits 1.

Example::

    foundry audit list --action key.revoke
    foundry audit verify
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from control import audit
from control.cli.admin import (
    DEFAULT_API,
    ApiKeyOption,
    ApiUrlOption,
    JsonOption,
    _Client,
    _console,
    _fail,
    _print_json,
    _when,
)

PAGE = 1000


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="The audit log of changes made through the control API (admins).", no_args_is_help=True)
    group.command("list")(audit_list)
    group.command("verify")(audit_verify)
    app.add_typer(group, name="audit")


def audit_list(
    action: Annotated[str | None, typer.Option("--action", help="e.g. key.create, member.remove")] = None,
    actor: Annotated[str | None, typer.Option("--actor", help="e.g. user:usr_..., key:key_...")] = None,
    project: Annotated[str | None, typer.Option("--project", help="Only this project.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="ISO 8601 (UTC if no zone).")] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many records.")] = 100,
    as_json: JsonOption = False,
    api: ApiUrlOption = DEFAULT_API,
    api_key: ApiKeyOption = None,
) -> None:
    """List audit records, oldest first."""
    params = {k: v for k, v in (("action", action), ("actor", actor), ("project", project), ("since", since)) if v}
    page = _Client(api, api_key).call("GET", "/audit", params={**params, "limit": limit})
    if as_json:
        _print_json(page["data"])
        return
    table = Table(title="Audit log")
    for column in ("seq", "time", "actor", "action", "target", "changes"):
        table.add_column(column, overflow="fold")
    for r in page["data"]:
        table.add_row(str(r["seq"]), _when(r["at"]), r["actor"], r["action"], r["target"], str(r["changes"]))
    _console().print(table)


def audit_verify(api: ApiUrlOption = DEFAULT_API, api_key: ApiKeyOption = None) -> None:
    """Check the whole audit chain; exit 1 naming each modified or deleted record."""
    client = _Client(api, api_key)
    records: list[dict[str, Any]] = []
    after, chain = 0, None
    while True:
        page = client.call("GET", "/audit", params={"after": after, "limit": PAGE})
        records += page["data"]
        chain = chain or page["chain"]  # the head as of the first page: later appends are not gaps
        if not page["has_more"]:
            break
        after = page["data"][-1]["seq"]
    records = [r for r in records if r["seq"] <= chain["length"]] if chain else records
    problems = audit.verify(records, chain)
    if problems:
        for problem in problems:
            typer.echo(f"audit chain broken: {problem}", err=True)
        _fail(f"{len(problems)} problem(s) in {len(records)} audit records")
    typer.echo(f"audit chain intact: {len(records)} records, head {chain['hash'][:16] if chain else '-'}")
