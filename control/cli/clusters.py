"""``foundry clusters add|list|get|refresh|delete``: where deployments run.

Example::

    foundry clusters add local                       # the Ray cluster `foundry up` runs on
    foundry clusters add gpu-east --kubeconfig ~/.kube/config --context east --namespace ml
    foundry clusters list
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from control.cli.admin import DEFAULT_API, ApiKeyOption, ApiUrlOption, JsonOption, _Client, _console, _fail, _print_json, _when

ClusterArg = Annotated[str, typer.Argument(help="The cluster's name or id.")]


def register(app: typer.Typer) -> None:
    clusters = typer.Typer(help="Register the clusters deployments run on: local Ray, or Kubernetes with KubeRay.",
                           no_args_is_help=True)  # fmt: skip
    clusters.command("add")(clusters_add)
    clusters.command("list")(clusters_list)
    clusters.command("get")(clusters_get)
    clusters.command("refresh")(clusters_refresh)
    clusters.command("delete")(clusters_delete)
    app.add_typer(clusters, name="clusters")


def clusters_add(
    name: Annotated[str, typer.Argument(help='"local" (the stack\'s Ray cluster) or a name for a Kubernetes cluster.')],
    kubeconfig: Annotated[Path | None, typer.Option("--kubeconfig", help="Kubeconfig file of a Kubernetes cluster.")] = None,
    context: Annotated[str | None, typer.Option("--context", help="Kubeconfig context (default: its current one).")] = None,
    namespace: Annotated[str | None, typer.Option("--namespace", help="Namespace of the RayServices.")] = None,
    as_json: JsonOption = False,
    api: ApiUrlOption = DEFAULT_API,
    api_key: ApiKeyOption = None,
) -> None:
    """Register a cluster and read its inventory (nodes, CPUs, GPUs by type, memory)."""
    body: dict = {"name": name}
    if kubeconfig is not None:
        try:
            body["kubeconfig"] = kubeconfig.expanduser().read_text()
        except OSError as exc:
            _fail(f"cannot read --kubeconfig {kubeconfig}: {exc.strerror}")
        body.update({k: v for k, v in (("context", context), ("namespace", namespace)) if v})
    elif name != "local":
        _fail("a Kubernetes cluster needs --kubeconfig PATH (or name the local Ray cluster `local`)")
    cluster = _Client(api, api_key).call("POST", "/clusters", json=body)
    if as_json:
        _print_json(cluster)
        return
    _show(cluster)


def clusters_list(as_json: JsonOption = False, api: ApiUrlOption = DEFAULT_API, api_key: ApiKeyOption = None) -> None:
    """List registered clusters."""
    clusters = _Client(api, api_key).call("GET", "/clusters")["data"]
    if as_json:
        _print_json(clusters)
        return
    table = Table(title="Clusters")
    for column in ("id", "name", "kind", "nodes", "cpus", "gpus", "health", "refreshed"):
        table.add_column(column, overflow="fold")
    for c in clusters:
        totals = c["inventory"].get("totals", {})
        gpus = ", ".join(f"{n}x {t}" for t, n in c["inventory"].get("gpus_by_type", {}).items()) or str(totals.get("gpus", 0))
        table.add_row(c["id"], c["name"], c["kind"], str(totals.get("nodes", "")), f"{totals.get('cpus', 0):g}", gpus,
                      c["health"] + (f" ({c['health_reason']})" if c["health_reason"] else ""), _when(c["refreshed_at"]))  # fmt: skip
    _console().print(table)


def clusters_get(cluster: ClusterArg, as_json: JsonOption = False, api: ApiUrlOption = DEFAULT_API,
                 api_key: ApiKeyOption = None) -> None:  # fmt: skip
    """Show a cluster and its inventory."""
    found = _Client(api, api_key).call("GET", f"/clusters/{cluster}")
    _print_json(found) if as_json else _show(found)


def clusters_refresh(cluster: ClusterArg, as_json: JsonOption = False, api: ApiUrlOption = DEFAULT_API,
                     api_key: ApiKeyOption = None) -> None:  # fmt: skip
    """Read the inventory and health again."""
    found = _Client(api, api_key).call("POST", f"/clusters/{cluster}/refresh")
    _print_json(found) if as_json else _show(found)


def clusters_delete(cluster: ClusterArg, api: ApiUrlOption = DEFAULT_API, api_key: ApiKeyOption = None) -> None:
    """Forget a cluster (refused while deployments run on it)."""
    _Client(api, api_key).call("DELETE", f"/clusters/{cluster}")
    typer.echo(f"cluster {cluster} deleted")


def _show(c: dict) -> None:
    totals = c["inventory"].get("totals", {})
    memory_gib = totals.get("memory_bytes", 0) / 2**30
    typer.echo(f"{c['name']} ({c['kind']}, {c['id']}): {c['health']}"
               + (f", {c['health_reason']}" if c["health_reason"] else ""))  # fmt: skip
    typer.echo(f"  {totals.get('nodes', 0)} node(s), {totals.get('cpus', 0):g} CPUs, {totals.get('gpus', 0)} GPUs, "
               f"{memory_gib:.1f} GiB")  # fmt: skip
    for gpu, count in c["inventory"].get("gpus_by_type", {}).items():
        typer.echo(f"  {count}x {gpu}")
