"""``foundry pipelines``: run pipeline definitions on the stack and follow them.

Each command talks to the control API (``--api``, ``--api-key`` as for ``foundry keys``)::

    foundry pipelines run deploy.yaml --param model=foundry-tiny --wait   # a progress bar until it ends
    foundry pipelines run deploy.yaml --json                              # the run JSON at once
    foundry pipelines status run_0123 --json
    foundry pipelines event run_0123 approve --data '{"by": "ops"}'
    foundry pipelines cancel run_0123
    foundry pipelines list

``run`` uploads the file's definition (YAML or JSON; a new version if the name exists), then
starts a run. With ``--wait`` it follows the run's event stream and exits 1 unless the run
succeeded.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from control.cli.admin import DEFAULT_API, ApiKeyOption, ApiUrlOption, JsonOption, _Client, _console, _fail, _print_json

FINAL = ("succeeded", "failed", "cancelled")
STREAM_READ_TIMEOUT_S = 60.0
POLL_S = 1.0


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Run durable DAG pipelines and follow them.", no_args_is_help=True)
    group.command("run")(run)
    group.command("status")(status)
    group.command("event")(event)
    group.command("cancel")(cancel)
    group.command("list")(list_pipelines)
    app.add_typer(group, name="pipelines")


def run(
    file: Annotated[Path, typer.Argument(help="Pipeline definition, YAML or JSON.", exists=True, dir_okay=False)],
    param: Annotated[
        list[str] | None, typer.Option("--param", metavar="KEY=VALUE", help="A run parameter; repeat for more.")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the run until it ends (exit 1 unless it succeeded).")] = False,
    as_json: JsonOption = False,
    api: ApiUrlOption = DEFAULT_API,
    api_key: ApiKeyOption = None,
) -> None:
    """Upload a pipeline definition and start a run of it."""
    from pipelines.errors import DefinitionError
    from pipelines.loader import read_file

    try:
        definition = read_file(file)
    except DefinitionError as exc:
        _fail(str(exc))
    params = _params(param or [])
    client = _Client(api, api_key)
    created = client.call("POST", "/pipelines", json=definition)
    started = client.call("POST", f"/pipelines/{created['id']}/runs", json={"params": params})
    if not wait:
        if as_json:
            _print_json(started)
        else:
            typer.echo(f"run {started['id']} of {created['name']} v{created['version']}: {started['status']}")
        return
    final = _follow(client, started, quiet=as_json)
    if as_json:
        _print_json(final)
    else:
        _print_run(final)
    if final["status"] != "succeeded":
        raise typer.Exit(1)


def status(
    run_id: Annotated[str, typer.Argument(help="The run's id.")],
    as_json: JsonOption = False,
    api: ApiUrlOption = DEFAULT_API,
    api_key: ApiKeyOption = None,
) -> None:
    """Show a run: status, progress and its steps."""
    found = _Client(api, api_key).call("GET", f"/pipelines/runs/{run_id}")
    if as_json:
        _print_json(found)
    else:
        _print_run(found)


def event(
    run_id: Annotated[str, typer.Argument(help="The run's id.")],
    name: Annotated[str, typer.Argument(help="The event's name (a wait_for_event step's `name`).")],
    data: Annotated[str | None, typer.Option("--data", help="The event's data, a JSON value.")] = None,
    as_json: JsonOption = False,
    api: ApiUrlOption = DEFAULT_API,
    api_key: ApiKeyOption = None,
) -> None:
    """Send an event to a run; the step waiting for it completes with the data as outputs."""
    try:
        value = json.loads(data) if data is not None else {}
    except ValueError as exc:
        _fail(f"--data is not JSON: {exc}")
    found = _Client(api, api_key).call("POST", f"/pipelines/runs/{run_id}/events/{name}", json={"data": value})
    if as_json:
        _print_json(found)
    else:
        typer.echo(f"event {name} sent to run {run_id} ({found['status']})")


def cancel(
    run_id: Annotated[str, typer.Argument(help="The run's id.")],
    as_json: JsonOption = False,
    api: ApiUrlOption = DEFAULT_API,
    api_key: ApiKeyOption = None,
) -> None:
    """Cancel a run: running steps stop, pending ones never start."""
    found = _Client(api, api_key).call("POST", f"/pipelines/runs/{run_id}/cancel", json={})
    if as_json:
        _print_json(found)
    else:
        typer.echo(f"run {run_id}: {found['status']}")


def list_pipelines(
    as_json: JsonOption = False,
    api: ApiUrlOption = DEFAULT_API,
    api_key: ApiKeyOption = None,
) -> None:
    """List pipeline definitions (latest versions) and recent runs."""
    client = _Client(api, api_key)
    definitions = client.call("GET", "/pipelines")["data"]
    runs = client.call("GET", "/pipelines/runs", params={"limit": 20})["data"]
    if as_json:
        _print_json({"pipelines": definitions, "runs": runs})
        return
    console = _console()
    table = Table("ID", "NAME", "VERSION", "STEPS", "CREATED", title="Pipelines", title_justify="left")
    for d in definitions:
        table.add_row(d["id"], d["name"], str(d["version"]), str(len(d["definition"]["steps"])), d["created_at"])
    console.print(table)
    table = Table("RUN", "PIPELINE", "STATUS", "PROGRESS", "CREATED", title="Recent runs", title_justify="left")
    for r in runs:
        table.add_row(r["id"], r["pipeline_id"], r["status"], f"{r['progress']:.0f}%", r["created_at"])
    console.print(table)


# --- helpers ---------------------------------------------------------------------------------


def _params(pairs: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            _fail(f"--param {pair!r}: expected KEY=VALUE")
        params[key.strip()] = value
    return params


def _follow(client: _Client, run: dict, *, quiet: bool) -> dict:
    """Follow the run's SSE stream (a progress bar on stderr unless quiet) until it ends; on a
    broken stream, poll the run instead."""
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeRemainingColumn(),
        console=Console(stderr=True), disable=quiet, transient=False,
    )  # fmt: skip
    with progress:
        bar = progress.add_task(f"{run['id']} {run['status']}", total=100, completed=run["progress"])
        try:
            final = _stream(client, run["id"], lambda r: progress.update(bar, completed=r["progress"], description=f"{r['id']} {r['status']}"), progress)
        except httpx.HTTPError:
            final = None
        while final is None or final["status"] not in FINAL:
            final = client.call("GET", f"/pipelines/runs/{run['id']}")
            progress.update(bar, completed=final["progress"], description=f"{final['id']} {final['status']}")
            if final["status"] not in FINAL:
                time.sleep(POLL_S)
    return final


def _stream(client: _Client, run_id: str, update, progress: Progress) -> dict | None:
    headers = {"Authorization": f"Bearer {client.api_key}", "Accept": "text/event-stream"}
    timeout = httpx.Timeout(10.0, read=STREAM_READ_TIMEOUT_S)
    final = None
    with httpx.Client(timeout=timeout) as http, http.stream(
        "GET", f"{client.api}/pipelines/runs/{run_id}/stream", headers=headers
    ) as response:
        if response.status_code >= 400:
            response.read()
            from control.cli.admin import _describe_error

            _fail(_describe_error(response))
        kind, data = None, []
        for line in response.iter_lines():
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif not line and kind:
                payload: Any = json.loads("\n".join(data)) if data else None
                if kind in ("run", "end"):
                    update(payload)
                    final = payload
                elif kind == "progress":
                    update({"id": run_id, **payload})
                elif kind == "step":
                    progress.console.print(f"  {payload['step_id']}: {payload['status']}"
                                           + (f" ({payload['error']})" if payload.get("error") else ""), highlight=False)
                kind, data = None, []
    return final


def _print_run(run: dict) -> None:
    console = _console()
    eta = f", eta {run['eta_s']:.0f}s" if run.get("eta_s") else ""
    console.print(f"run {run['id']} ({run['pipeline_id']} v{run.get('pipeline_version', '?')}): "
                  f"{run['status']}, {run['progress']:.0f}%{eta}")  # fmt: skip
    if run.get("error"):
        console.print(f"error: {run['error']}")
    table = Table("STEP", "STATUS", "ATTEMPTS", "STARTED", "FINISHED", "ERROR")
    for step_id, step in run["steps"].items():
        table.add_row(step_id, step["status"], str(step["attempts"]), step["started_at"] or "-",
                      step["finished_at"] or "-", step["error"] or "")  # fmt: skip
    console.print(table)
