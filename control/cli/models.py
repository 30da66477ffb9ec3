"""``foundry models add|list|get|update|delete``: the model registry deployments draw from.

SOURCE is a local model directory (config.json, a tokenizer and weights; a relative path is
taken from the current directory), ``builtin:foundry-tiny``, or an outside provider's model as
``TYPE:MODEL`` with a provider type of the config file (local, openai, together, azure,
anthropic). ``--base-url``, ``--api-key-env`` and ``--provider-option KEY=VALUE`` fill in the
rest of the provider's table, as ``[models.X.providers.Y]`` in foundry.toml would.

Example::

    foundry models add builtin:foundry-tiny
    foundry models add ./Llama-3.1-8B-Instruct --name llama-8b --tag chat --description "fine-tune v3"
    foundry models add openai:gpt-4o-mini --api-key-env OPENAI_API_KEY
    foundry models add together:meta-llama/Llama-3.3-70B-Instruct-Turbo --name llama-70b
    foundry models add azure:gpt-4o --base-url https://eu.openai.azure.com --provider-option api_version=2024-10-21
    foundry models list
    foundry models update llama-8b --tag chat --tag prod
    foundry models delete llama-8b
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.table import Table

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

ModelArg = Annotated[str, typer.Argument(help="The model's id or name.")]
TagOption = Annotated[list[str] | None, typer.Option("--tag", help="A tag; repeat for more.")]
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9_-]*):")


def register(app: typer.Typer) -> None:
    models = typer.Typer(help="Register the models deployments run: local directories, built-in or provider models.",
                         no_args_is_help=True)  # fmt: skip
    models.command("add")(models_add)
    models.command("list")(models_list)
    models.command("get")(models_get)
    models.command("update")(models_update)
    models.command("delete")(models_delete)
    app.add_typer(models, name="models")


def models_add(
    source: Annotated[str, typer.Argument(
        help="A model directory, builtin:foundry-tiny, or TYPE:MODEL (openai:gpt-4o-mini, together:..., azure:..., "
        "anthropic:..., local:RUNTIME).",
    )],
    name: Annotated[str | None, typer.Option("--name", help="Default: the directory's name, or the model id.")] = None,
    description: Annotated[str, typer.Option("--description", help="Free text.")] = "",
    tags: TagOption = None,
    base_url: Annotated[str | None, typer.Option("--base-url", help="A provider model's base URL.")] = None,
    api_key_env: Annotated[
        str | None, typer.Option("--api-key-env", help="The environment variable holding a provider's key.")
    ] = None,
    options: Annotated[list[str] | None, typer.Option(
        "--provider-option", metavar="KEY=VALUE",
        help="Another setting of the provider's table (VALUE read as JSON if it parses, else text); repeat for more.",
    )] = None,
    as_json: JsonOption = False,
    api: ApiUrlOption = DEFAULT_API,
    api_key: ApiKeyOption = None,
) -> None:  # fmt: skip
    """Register a model; its architecture is read from its config.json for the optimizer."""
    settings = _provider(base_url, api_key_env, options or [])
    scheme = _SCHEME.match(source)
    if scheme is None or source.startswith(("/", "~", ".")):
        if settings:
            _fail("--base-url, --api-key-env and --provider-option go with a provider model (TYPE:MODEL)")
        directory = Path(source).expanduser()  # the shell's path, sent absolute
        source = str(directory.resolve()) if directory.exists() else str(directory.absolute())
    body: dict[str, Any] = {"source": source, "description": description, "tags": tags or []}
    if settings:  # a provider model with settings: the whole provider table instead of the source
        kind, model = scheme.group(1), source[scheme.end():]
        body.pop("source")
        body["provider"] = {**settings, "type": kind, "runtime" if kind == "local" else "model": model}
    if name is not None:
        body["name"] = name
    model = _Client(api, api_key).call("POST", "/models", json=body)
    if as_json:
        _print_json(model)
        return
    _show(model)


def _provider(base_url: str | None, api_key_env: str | None, options: list[str]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key.strip():
            _fail(f"--provider-option {option!r}: expected KEY=VALUE")
        try:
            table[key.strip()] = json.loads(value)
        except ValueError:
            table[key.strip()] = value
    if base_url is not None:
        table["base_url"] = base_url
    if api_key_env is not None:
        table["api_key_env"] = api_key_env
    return table


def models_list(
    tag: Annotated[str | None, typer.Option("--tag", help="Only models with this tag.")] = None,
    as_json: JsonOption = False,
    api: ApiUrlOption = DEFAULT_API,
    api_key: ApiKeyOption = None,
) -> None:
    """List registered models."""
    models = _Client(api, api_key).call("GET", "/models", params={"tag": tag} if tag else None)["data"]
    if as_json:
        _print_json(models)
        return
    table = Table(title="Models")
    for column in ("id", "name", "kind", "source", "params", "layers", "context", "dtype", "tags", "added"):
        table.add_column(column, overflow="fold")
    for m in models:
        arch = m["architecture"] or {}
        table.add_row(m["id"], m["name"], m["kind"], m["source"], _params(arch.get("parameters")),
                      str(arch.get("num_layers", "-")), str(arch.get("context_length", "-")), arch.get("dtype", "-"),
                      ", ".join(m["tags"]), _when(m["created_at"]))  # fmt: skip
    _console().print(table)


def models_get(model: ModelArg, as_json: JsonOption = False, api: ApiUrlOption = DEFAULT_API,
               api_key: ApiKeyOption = None) -> None:  # fmt: skip
    """Show a model and its architecture."""
    found = _Client(api, api_key).call("GET", f"/models/{_path(model)}")
    if as_json:
        _print_json(found)
        return
    _show(found)


def models_update(
    model: ModelArg,
    description: Annotated[str | None, typer.Option("--description", help="The new description.")] = None,
    tags: Annotated[list[str] | None, typer.Option("--tag", help="Replaces the tags; repeat for more.")] = None,
    clear_tags: Annotated[bool, typer.Option("--clear-tags", help="Remove every tag.")] = False,
    as_json: JsonOption = False,
    api: ApiUrlOption = DEFAULT_API,
    api_key: ApiKeyOption = None,
) -> None:
    """Change a model's description or tags."""
    if clear_tags and tags:
        _fail("give --tag or --clear-tags, not both")
    body: dict[str, Any] = {}
    if description is not None:
        body["description"] = description
    if tags or clear_tags:
        body["tags"] = tags or []
    if not body:
        _fail("nothing to change: give --description, --tag or --clear-tags")
    updated = _Client(api, api_key).call("PATCH", f"/models/{_path(model)}", json=body)
    if as_json:
        _print_json(updated)
        return
    typer.echo(f"updated model {updated['name']} ({updated['id']}): tags {', '.join(updated['tags']) or 'none'}")


def models_delete(model: ModelArg, as_json: JsonOption = False, api: ApiUrlOption = DEFAULT_API,
                  api_key: ApiKeyOption = None) -> None:  # fmt: skip
    """Remove a model from the registry (refused while a deployment uses it)."""
    deleted = _Client(api, api_key).call("DELETE", f"/models/{_path(model)}")
    if as_json:
        _print_json(deleted)
        return
    typer.echo(f"deleted model {deleted['name']} ({deleted['id']})")


def _path(ref: str) -> str:
    return quote(ref, safe="/")  # names may hold '/': the route takes the rest of the path


def _params(count: int | None) -> str:
    """``8.03B``, ``3.9M``: a parameter count for people."""
    if count is None:
        return "-"
    for scale, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= scale:
            return f"{count / scale:.3g}{unit}"
    return str(count)


def _show(model: dict) -> None:
    table = Table(title=f"Model {model['name']}", show_header=False)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    arch = model["architecture"]
    rows = [("id", model["id"]), ("kind", model["kind"]), ("source", model["source"]), ("path", model["path"] or "-")]
    if model["provider"]:
        rows.append(("provider", json.dumps(model["provider"])))
    if arch:
        experts = "none"
        if arch["num_experts"]:
            experts = f"{arch['num_experts']} ({arch['num_experts_per_token']} per token)"
        rows += [
            ("parameters", f"{_params(arch['parameters'])} ({_params(arch['active_parameters'])} active)"),
            ("layers", str(arch["num_layers"])), ("hidden size", str(arch["hidden_size"])),
            ("heads / KV heads", f"{arch['num_heads']} / {arch['num_kv_heads']}"), ("experts", experts),
            ("dtype", arch["dtype"]), ("context", str(arch["context_length"])),
        ]  # fmt: skip
    else:
        rows.append(("architecture", "unknown (not in the optimizer's catalog)"))
    rows += [("description", model["description"]), ("tags", ", ".join(model["tags"])),
             ("added", f"{_when(model['created_at'])} by {model['created_by'] or '-'}")]  # fmt: skip
    for field, value in rows:
        table.add_row(field, value)
    _console().print(table)
