"""``foundry keys``, ``foundry projects`` and ``foundry usage``: the control API from a shell.

Each command is one HTTP call to the control API of a running stack (``--api``, default
``http://127.0.0.1:8000/api`` or ``$FOUNDRY_API``) with an admin key (``--api-key``, or
``$FOUNDRY_API_KEY``, or ``$FOUNDRY_ADMIN_KEY``). ``--json`` prints the API's JSON for scripts;
without it the output is for people. Failures print one ``error: ...`` line on stderr and exit 1.

Example::

    export FOUNDRY_ADMIN_KEY=sk-fnd-...
    foundry keys create --project my-app --models foundry-tiny --rpm 60
    foundry keys create --project my-app --model-limit chat-main:30:50000 --budget-usd 20 --budget-period day
    foundry keys update key_0123456789ab --tpm 100000 --clear rpm
    foundry keys regenerate key_0123456789ab      # a new secret; same id, limits and spend
    foundry projects create team-a --budget-tokens 10000000
    foundry keys list --project my-app
    foundry usage --since 2025-01-01T00:00:00
    foundry usage --since 24h --interval 1h --by model
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timezone
from enum import Enum
from typing import Annotated, Any, NoReturn

import httpx
import typer
from rich.console import Console
from rich.table import Table

DEFAULT_API = "http://127.0.0.1:8000/api"
TIMEOUT_S = 15.0
PIPED_WIDTH = 220

ApiUrlOption = Annotated[
    str, typer.Option("--api", envvar="FOUNDRY_API", help="URL of the control API.", show_default=True)
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar=["FOUNDRY_API_KEY", "FOUNDRY_ADMIN_KEY"],
        help="An admin API key (default: $FOUNDRY_API_KEY, then $FOUNDRY_ADMIN_KEY).",
        show_envvar=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
RpmOption = Annotated[int | None, typer.Option("--rpm", help="Requests per minute (default: no limit).")]
TpmOption = Annotated[int | None, typer.Option("--tpm", help="Tokens per minute (default: no limit).")]
ModelLimitOption = Annotated[
    list[str] | None,
    typer.Option(
        "--model-limit",
        metavar="MODEL:RPM:TPM",
        help="Limits on one model on top of --rpm/--tpm; leave RPM or TPM empty for none "
        "(chat-main:60:, chat-main::100000). Repeat for more models.",
    ),
]
BudgetTokensOption = Annotated[
    int | None, typer.Option("--budget-tokens", help="Prompt + completion tokens per period (default: none).")
]
BudgetUsdOption = Annotated[
    float | None, typer.Option("--budget-usd", help="US dollars per period, at the gateway's pricing (default: none).")
]


class Period(str, Enum):
    day = "day"
    month = "month"


BudgetPeriodOption = Annotated[
    Period | None, typer.Option("--budget-period", help="Budget period: calendar days or months, UTC (default: month).")
]


class KeyField(str, Enum):
    models = "models"
    rpm = "rpm"
    tpm = "tpm"
    model_limits = "model-limits"
    budget_tokens = "budget-tokens"
    budget_usd = "budget-usd"


class ProjectField(str, Enum):
    budget_tokens = "budget-tokens"
    budget_usd = "budget-usd"


def register(app: typer.Typer) -> None:
    keys = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
    keys.command("create")(keys_create)
    keys.command("list")(keys_list)
    keys.command("update")(keys_update)
    keys.command("regenerate")(keys_regenerate)
    keys.command("revoke")(keys_revoke)
    projects = typer.Typer(help="List, create and update projects.", no_args_is_help=True)
    projects.command("list")(projects_list)
    projects.command("create")(projects_create)
    projects.command("update")(projects_update)
    from control.cli import members

    members.register(projects)
    app.add_typer(keys, name="keys")
    app.add_typer(projects, name="projects")
    app.command("usage")(usage)


# --- commands -------------------------------------------------------------------------------


def keys_create(
    project: Annotated[str, typer.Option("--project", help="Project name; created if missing.")],
    name: Annotated[str | None, typer.Option("--name", help="A label for the key.")] = None,
    models: Annotated[
        str | None, typer.Option("--models", help="Comma-separated models the key may use (default: all).")
    ] = None,
    rpm: RpmOption = None,
    tpm: TpmOption = None,
    model_limit: ModelLimitOption = None,
    budget_tokens: BudgetTokensOption = None,
    budget_usd: BudgetUsdOption = None,
    budget_period: BudgetPeriodOption = None,
    expires_in_days: Annotated[
        float | None, typer.Option("--expires-in-days", help="Expire the key after this many days.")
    ] = None,
    as_json: JsonOption = False,
    api: ApiUrlOption = DEFAULT_API,
    api_key: ApiKeyOption = None,
) -> None:
    """Create an API key. Its secret is printed once: store it."""
    body: dict[str, Any] = {"project": project}
    if name is not None:
        body["name"] = name
    if models is not None:
        body["models"] = _models(models)
    if model_limit:
        body["model_limits"] = _model_limits(model_limit)
    for field, value in (
        ("rpm", rpm),
        ("tpm", tpm),
        ("budget_tokens", budget_tokens),
        ("budget_usd", budget_usd),
        ("budget_period", budget_period.value if budget_period else None),
        ("expires_in_days", expires_in_days),
    ):
        if value is not None:
            body[field] = value
    created = _Client(api, api_key).call("POST", "/keys", json=body)
    if as_json:
        _print_json(created)
        return
    typer.echo(
        f"created key {created['id']} in project {created['project']}: {created['key']}\n"
        "store this secret now: it is not shown again"
    )


def keys_list(
    project: Annotated[str | None, typer.Option("--project", help="Only this project's keys.")] = None,
    as_json: JsonOption = False,
    api: ApiUrlOption = DEFAULT_API,
    api_key: ApiKeyOption = None,
) -> None:
    """List API keys (their prefixes only; secrets are never stored)."""
    params = {"project": project} if project is not None else None
    keys = _Client(api, api_key).call("GET", "/keys", params=params)["data"]
    if as_json:
        _print_json(keys)
        return
    table = Table(title=f"API keys{f' of {project}' if project else ''}")
    for column in ("id", "project", "name", "prefix", "models", "rpm", "tpm", "budget", "expires", "status"):
        table.add_column(column, overflow="fold")
    for k in keys:
        table.add_row(
            k["id"],
            k["project"],
            k["name"] or "",
            k["prefix"] + "…",
            ",".join(k["models"]) if k["models"] is not None else "all",
            _limit(k["rpm"]),
            _limit(k["tpm"]),
            _budget(k) or "-",
            _when(k["expires_at"]) or "never",
            _status(k),
        )
    _console().print(table)


def keys_update(
    key_id: Annotated[str, typer.Argument(help="The key's id, as `foundry keys list` shows it.")],
    name: Annotated[str | None, typer.Option("--name", help="A new label.")] = None,
    models: Annotated[str | None, typer.Option("--models", help="Comma-separated models the key may use.")] = None,
    rpm: RpmOption = None,
    tpm: TpmOption = None,
    model_limit: ModelLimitOption = None,
    budget_tokens: BudgetTokensOption = None,
    budget_usd: BudgetUsdOption = None,
    budget_period: BudgetPeriodOption = None,
    clear: Annotated[
        list[KeyField] | None,
        typer.Option(
            "--clear",
            metavar="FIELD",
            help="Remove a limit: models (then every model), rpm, tpm, model-limits, budget-tokens or "
            "budget-usd. Repeat for more.",
        ),
    ] = None,
    as_json: JsonOption = False,
    api: ApiUrlOption = DEFAULT_API,
    api_key: ApiKeyOption = None,
) -> None:
    """Change a key's models, limits or budget; what is not given stays. --model-limit replaces
    every per-model limit. Gateways apply the change within seconds."""
    body = _patch_body(
        clear,
        {"name": name, "rpm": rpm, "tpm": tpm, **_budget_body(budget_tokens, budget_usd, budget_period)},
    )
    if models is not None:
        body["models"] = _models(models)
    if model_limit:
        body["model_limits"] = _model_limits(model_limit)
    if not body:
        _fail("nothing to change: give --rpm, --tpm, --model-limit, --budget-*, --models, --name or --clear")
    key = _Client(api, api_key).call("PATCH", f"/keys/{key_id}", json=body)
    if as_json:
        _print_json(key)
        return
    typer.echo(f"updated key {key['id']} ({key['prefix']}…) of project {key['project']}: {_limits(key)}")


def keys_regenerate(
    key_id: Annotated[str, typer.Argument(help="The key's id, as `foundry keys list` shows it.")],
    as_json: JsonOption = False,
    api: ApiUrlOption = DEFAULT_API,
    api_key: ApiKeyOption = None,
) -> None:
    """Give a key a new secret, printed once; the old one stops working within seconds. The id,
    limits and budget stay, and so does what the key has spent this period."""
    key = _Client(api, api_key).call("POST", f"/keys/{key_id}/regenerate")
    if as_json:
        _print_json(key)
        return
    typer.echo(
        f"regenerated key {key['id']} of project {key['project']}: {key['key']}\n"
        "store this secret now: it is not shown again; the old one no longer works"
    )


def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id, as `foundry keys list` shows it.")],
    as_json: JsonOption = False,
    api: ApiUrlOption = DEFAULT_API,
    api_key: ApiKeyOption = None,
) -> None:
    """Revoke an API key. Gateways stop accepting it within seconds."""
    key = _Client(api, api_key).call("DELETE", f"/keys/{key_id}")
    if as_json:
        _print_json(key)
        return
    typer.echo(f"revoked key {key['id']} ({key['prefix']}…) of project {key['project']}")


def projects_list(as_json: JsonOption = False, api: ApiUrlOption = DEFAULT_API, api_key: ApiKeyOption = None) -> None:
    """List projects."""
    projects = _Client(api, api_key).call("GET", "/projects")["data"]
    if as_json:
        _print_json(projects)
        return
    table = Table(title="Projects")
    for column in ("id", "name", "budget", "created"):
        table.add_column(column, overflow="fold")
    for p in projects:
        table.add_row(p["id"], p["name"], _budget(p), _when(p["created_at"]))
    _console().print(table)


def projects_create(
    name: Annotated[str, typer.Argument(help="Letters, digits, '.', '_' and '-'.")],
    budget_tokens: BudgetTokensOption = None,
    budget_usd: BudgetUsdOption = None,
    budget_period: BudgetPeriodOption = None,
    as_json: JsonOption = False,
    api: ApiUrlOption = DEFAULT_API,
    api_key: ApiKeyOption = None,
) -> None:
    """Create a project, optionally with a budget shared by all its keys."""
    body: dict[str, Any] = {"name": name, **_budget_body(budget_tokens, budget_usd, budget_period)}
    project = _Client(api, api_key).call("POST", "/projects", json=body)
    if as_json:
        _print_json(project)
        return
    budget = _budget(project)
    with_budget = f" with a budget of {budget}" if budget else ""
    typer.echo(f"created project {project['name']} ({project['id']}){with_budget}")


def projects_update(
    project: Annotated[str, typer.Argument(help="The project's name or id.")],
    budget_tokens: BudgetTokensOption = None,
    budget_usd: BudgetUsdOption = None,
    budget_period: BudgetPeriodOption = None,
    clear: Annotated[
        list[ProjectField] | None,
        typer.Option("--clear", metavar="FIELD", help="Remove a budget: budget-tokens or budget-usd. Repeat for both."),
    ] = None,
    as_json: JsonOption = False,
    api: ApiUrlOption = DEFAULT_API,
    api_key: ApiKeyOption = None,
) -> None:
    """Change a project's budget; what is not given stays. Gateways apply it within seconds."""
    body = _patch_body(clear, _budget_body(budget_tokens, budget_usd, budget_period))
    if not body:
        _fail("nothing to change: give --budget-tokens, --budget-usd, --budget-period or --clear")
    updated = _Client(api, api_key).call("PATCH", f"/projects/{project}", json=body)
    if as_json:
        _print_json(updated)
        return
    typer.echo(f"updated project {updated['name']} ({updated['id']}): budget {_budget(updated) or 'none'}")


class Metric(str, Enum):
    requests = "requests"
    errors = "errors"
    tokens = "tokens"
    cost = "cost"
    latency_p50 = "latency_p50"
    latency_p95 = "latency_p95"
    ttft_p50 = "ttft_p50"
    ttft_p95 = "ttft_p95"


class Interval(str, Enum):
    five_minutes = "5m"
    hour = "1h"
    day = "1d"


class Dimension(str, Enum):
    model = "model"
    project = "project"
    provider = "provider"
    key = "key"
    deployment = "deployment"


def usage(
    since: Annotated[
        str | None, typer.Option("--since", help="Start: ISO 8601 (UTC if no zone) or a duration back from now (30m, 24h, 7d).")
    ] = None,
    until: Annotated[str | None, typer.Option("--until", help="End, exclusive: ISO 8601 or a duration back from now.")] = None,
    project: Annotated[str | None, typer.Option("--project", help="Only this project.")] = None,
    interval: Annotated[
        Interval | None,
        typer.Option("--interval", help="Show a time series with buckets of 5m, 1h or 1d (from the rollups)."),
    ] = None,
    by: Annotated[
        Dimension | None, typer.Option("--by", help="One series per model, project, provider, key or deployment.")
    ] = None,
    metric: Annotated[
        Metric | None, typer.Option("--metric", help="What the time series counts (default: requests).")
    ] = None,
    as_json: JsonOption = False,
    api: ApiUrlOption = DEFAULT_API,
    api_key: ApiKeyOption = None,
) -> None:
    """Requests, errors, tokens and latency per model, from the gateway's request log.

    With --interval, --by or --metric: a time series (a table and a sparkline per series), e.g.
    `foundry usage --since 24h --interval 1h --by model`."""
    params = {k: _time_option(k, v) for k, v in (("since", since), ("until", until)) if v is not None}
    if project is not None:
        params["project"] = project
    if interval is not None or by is not None or metric is not None:
        params["metric"] = (metric or Metric.requests).value
        params["interval"] = (interval or Interval.hour).value
        if by is not None:
            params["group_by"] = by.value
        series = _Client(api, api_key).call("GET", "/analytics/timeseries", params=params)
        if as_json:
            _print_json(series)
        else:
            _print_timeseries(series)
        return
    report = _Client(api, api_key).call("GET", "/usage", params=params or None)
    if as_json:
        _print_json(report)
        return
    table = Table(
        title="Usage",
        caption=(
            f"{report['requests']} requests, {report['errors']} errors, "
            f"{report['prompt_tokens']} prompt + {report['completion_tokens']} completion tokens"
        ),
    )
    for column in ("model", "requests", "errors", "prompt tok", "completion tok", "p50 ms", "p95 ms", "ttft p50", "ttft p95"):
        table.add_column(column, justify="left" if column == "model" else "right", overflow="fold")
    for m in report["models"]:
        table.add_row(
            m["model"],
            str(m["requests"]),
            str(m["errors"]),
            str(m["prompt_tokens"]),
            str(m["completion_tokens"]),
            *(_ms(m[f]) for f in ("latency_p50_ms", "latency_p95_ms", "ttft_p50_ms", "ttft_p95_ms")),
        )
    _console().print(table)


# --- option parsing -------------------------------------------------------------------------


def _time_option(name: str, value: str) -> str:
    from control.client import resolve_time

    try:
        return resolve_time(value).isoformat()
    except ValueError as exc:
        _fail(f"--{name}: {exc}")


def _models(models: str) -> list[str]:
    names = [m.strip() for m in models.split(",") if m.strip()]
    if not names:
        _fail("--models names no model; leave it out for every model")
    return names


def _model_limits(specs: list[str]) -> dict[str, dict[str, int]]:
    """``MODEL:RPM:TPM`` options as the API's ``model_limits``; the model may contain ':'."""
    limits: dict[str, dict[str, int]] = {}
    for spec in specs:
        parts = spec.rsplit(":", 2)
        if len(parts) != 3 or not parts[0].strip():
            _fail(f"--model-limit {spec!r}: expected MODEL:RPM:TPM, e.g. chat-main:60:100000 or chat-main:60:")
        model, rpm, tpm = parts[0].strip(), parts[1].strip(), parts[2].strip()
        limit: dict[str, int] = {}
        for field, text in (("rpm", rpm), ("tpm", tpm)):
            if text:
                if not text.isdigit():
                    _fail(f"--model-limit {spec!r}: {field.upper()} must be a whole number, not {text!r}")
                limit[field] = int(text)
        if not limit:
            _fail(f"--model-limit {spec!r}: give RPM, TPM or both")
        if model in limits:
            _fail(f"--model-limit: model {model!r} given twice")
        limits[model] = limit
    return limits


def _patch_body(clear, changes: dict[str, Any]) -> dict[str, Any]:
    """A PATCH body: the --clear'ed fields as null, then the given values (never both)."""
    body: dict[str, Any] = {field.value.replace("-", "_"): None for field in clear or ()}
    for field, value in changes.items():
        if value is None:
            continue
        if field in body:
            _fail(f"--{field.replace('_', '-')} and --clear {field.replace('_', '-')} contradict each other")
        body[field] = value
    return body


def _budget_body(tokens: int | None, usd: float | None, period: Period | None) -> dict[str, Any]:
    fields = {"budget_tokens": tokens, "budget_usd": usd, "budget_period": period.value if period else None}
    return {k: v for k, v in fields.items() if v is not None}


# --- the HTTP client -----------------------------------------------------------------------


class _Client:
    def __init__(self, api: str, api_key: str | None) -> None:
        self.api = api.rstrip("/")
        self.api_key = api_key

    def call(self, method: str, path: str, *, json: dict | None = None, params: dict | None = None) -> Any:
        if not self.api_key:
            from control.login import current_token

            self.api_key = current_token()  # `foundry login`'s token, refreshed if need be
        if not self.api_key:
            _fail("no API key: run `foundry login`, set FOUNDRY_ADMIN_KEY (or FOUNDRY_API_KEY) or pass --api-key")
        headers = {"Authorization": f"Bearer {self.api_key}"}
        try:
            with httpx.Client(timeout=TIMEOUT_S) as client:
                response = client.request(method, self.api + path, json=json, params=params, headers=headers)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol):
            _fail(f"invalid control API URL {self.api!r} (expected e.g. {DEFAULT_API})")
        except httpx.TimeoutException:
            _fail(f"the control API at {self.api} did not answer within {TIMEOUT_S:g}s")
        except httpx.TransportError:
            _fail(f"cannot reach the control API at {self.api} — is `foundry up` running?")
        if response.status_code >= 400:
            _fail(_describe_error(response))
        if response.status_code == 204:
            return None
        try:
            return response.json()
        except ValueError:
            _fail(f"{self.api} answered with something that is not JSON; is it a Foundry control API?")


def _describe_error(response: httpx.Response) -> str:
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.reason_phrase or "request failed"
    hint = {
        401: " — check FOUNDRY_ADMIN_KEY or --api-key",
        403: " — your role does not allow this (see `foundry users me`)",
    }.get(response.status_code, "")
    return f"{message} (HTTP {response.status_code}){hint}"


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


# --- output ----------------------------------------------------------------------------------


def _console() -> Console:
    # Made per call, so it writes to whatever sys.stdout is now. Piped output has no terminal
    # width: make it wide rather than cut ids short.
    piped = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(width=PIPED_WIDTH if piped else None, markup=False)  # names are data, not markup


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2))


def _limit(value: int | None) -> str:
    return "-" if value is None else str(value)


def _budget(row: dict) -> str:
    """``"1000000 tokens + $20/month"``, or "" without a budget."""
    parts = []
    if row.get("budget_tokens") is not None:
        parts.append(f"{row['budget_tokens']} tokens")
    if row.get("budget_usd") is not None:
        parts.append(f"${row['budget_usd']:g}")
    return f"{' + '.join(parts)}/{row['budget_period']}" if parts else ""


def _limits(key: dict) -> str:
    """A key's limits in one line, for people."""
    parts = [f"{name} {key[name]}" for name in ("rpm", "tpm") if key[name] is not None]
    for model, limit in (key.get("model_limits") or {}).items():
        shown = ", ".join(f"{name} {limit[name]}" for name in ("rpm", "tpm") if limit.get(name) is not None)
        parts.append(f"{model}: {shown}")
    if budget := _budget(key):
        parts.append(f"budget {budget}")
    if key["models"] is not None:
        parts.append("models " + ",".join(key["models"]))
    return "; ".join(parts) or "no limits"


SPARKS = "▁▂▃▄▅▆▇█"
MAX_COLUMNS = 8  # series shown as table columns; every series gets a sparkline


def sparkline(values: list[float]) -> str:
    """One block character per value, scaled from 0 to the largest.

    >>> sparkline([0, 1, 2, 4, 8])
    '▁▂▃▅█'
    """
    top = max(values, default=0)
    if top <= 0:
        return SPARKS[0] * len(values)
    return "".join(SPARKS[min(len(SPARKS) - 1, round(v / top * (len(SPARKS) - 1)))] for v in values)


def _print_timeseries(data: dict) -> None:
    metric, interval = data["metric"], data["interval"]
    additive = not metric.startswith(("latency", "ttft"))
    series = sorted(
        data["series"], key=lambda s: -(sum if additive else max)([p["value"] for p in s["points"]] or [0])
    )
    shown = series[:MAX_COLUMNS]
    span = f"{_when(data['since'])} to {_when(data['until'])}"
    hidden = f"; {len(series) - len(shown)} more series below" if len(series) > len(shown) else ""
    table = Table(title=f"{metric} per {interval}, {span}", caption=f"{len(series)} series{hidden}")
    table.add_column("t (UTC)")
    for s in shown:
        table.add_column(s["group"] or "(none)", justify="right", overflow="fold")
    times = [p["t"] for p in series[0]["points"]] if series else []
    for i, t in enumerate(times):
        table.add_row(_when(t), *(_value(metric, s["points"][i]["value"]) for s in shown))
    console = _console()
    console.print(table)
    width = max((len(s["group"] or "(none)") for s in series), default=0)
    for s in series:
        values = [p["value"] for p in s["points"]]
        summary = f"total {_value(metric, sum(values))}" if additive else f"max {_value(metric, max(values, default=0))}"
        console.print(f"{(s['group'] or '(none)'):<{width}}  {sparkline(values)}  {summary}")
    if not series:
        console.print("no requests in this range")


def _value(metric: str, value: float) -> str:
    if metric == "cost":
        return f"${value:.4f}"
    if metric.startswith(("latency", "ttft")):
        return f"{value:.1f}"
    return str(int(value))


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _when(value: str | None) -> str:
    if value is None:
        return ""
    return datetime.fromisoformat(value).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _status(key: dict) -> str:
    if key["revoked_at"] is not None:
        return "revoked"
    expires = key["expires_at"]
    if expires is not None and datetime.fromisoformat(expires) <= datetime.now(timezone.utc):
        return "expired"
    return "active"
