"""``foundry deploy`` and ``foundry deployments list|get|scale|delete|render``.

Example::

    foundry models add builtin:foundry-tiny
    foundry clusters add local
    foundry deploy foundry-tiny --cluster local --name tiny-chat --wait
    foundry deployments scale DEPLOYMENT_ID --replicas 2
    foundry deployments delete DEPLOYMENT_ID --wait
    foundry deployments render meta-llama/Llama-3.1-70B-Instruct --target kuberay --gpu h100_sxm \\
        --num-gpus 8 --slo-ttft-ms 500 --slo-tpot-ms 30 --out llama-70b.yaml
"""

from __future__ import annotations

import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table

from control.cli.admin import DEFAULT_API, ApiKeyOption, ApiUrlOption, JsonOption, _Client, _console, _fail, _print_json, _when

DeploymentArg = Annotated[str, typer.Argument(help="The deployment's id.")]
WaitOption = Annotated[bool, typer.Option("--wait", help="Follow the pipeline until it ends.")]
WAIT_TIMEOUT_S = 3600.0
POLL_S = 1.0


class EngineChoice(str, Enum):
    cpu = "cpu"
    vllm = "vllm"


class TargetChoice(str, Enum):
    kuberay = "kuberay"


ClusterOption = Annotated[str | None, typer.Option("--cluster", help="A registered cluster's name or id.")]
NameOption = Annotated[str | None, typer.Option("--name", help="The model name the gateway serves (default: the model's).")]
EngineOption = Annotated[EngineChoice | None, typer.Option("--engine", help="cpu or vllm (default: vllm where there are GPUs).")]
ReplicasOption = Annotated[int | None, typer.Option("--replicas", min=1, help="Replicas (default: the optimizer's or 1).")]
TtftOption = Annotated[float | None, typer.Option("--slo-ttft-ms", help="Time-to-first-token SLO.")]
TpotOption = Annotated[float | None, typer.Option("--slo-tpot-ms", help="Time-per-output-token SLO.")]
IslOption = Annotated[int, typer.Option("--isl", min=1, help="Typical input tokens per request.")]
OslOption = Annotated[int, typer.Option("--osl", min=1, help="Typical output tokens per request.")]
ConcurrencyOption = Annotated[int, typer.Option("--concurrency", min=1, help="Typical requests in flight.")]


def register(app: typer.Typer) -> None:
    app.command("deploy")(deploy)
    deployments = typer.Typer(help="List, follow, scale, delete and render deployments.", no_args_is_help=True)
    deployments.command("list")(deployments_list)
    deployments.command("get")(deployments_get)
    deployments.command("scale")(deployments_scale)
    deployments.command("delete")(deployments_delete)
    deployments.command("render")(deployments_render)
    app.add_typer(deployments, name="deployments")


def deploy(
    model: Annotated[str, typer.Argument(help="A registered model's name or id (foundry models add).")],
    cluster: ClusterOption = None,
    name: NameOption = None,
    engine: EngineOption = None,
    replicas: ReplicasOption = None,
    slo_ttft_ms: TtftOption = None,
    slo_tpot_ms: TpotOption = None,
    isl: IslOption = 512,
    osl: OslOption = 128,
    concurrency: ConcurrencyOption = 8,
    project: Annotated[str | None, typer.Option("--project", help="The project that owns it.")] = None,
    benchmark_requests: Annotated[int, typer.Option("--benchmark-requests", min=0, help="0 skips the benchmark.")] = 8,
    wait: WaitOption = False,
    as_json: JsonOption = False,
    api: ApiUrlOption = DEFAULT_API,
    api_key: ApiKeyOption = None,
) -> None:
    """Deploy a model: simulate -> deploy -> health -> register in the gateway -> benchmark."""
    if cluster is None:
        _fail("--cluster is required (foundry clusters list)")
    body = _request(model, cluster, name=name, engine=engine, replicas=replicas, slo_ttft_ms=slo_ttft_ms,
                    slo_tpot_ms=slo_tpot_ms, isl=isl, osl=osl, concurrency=concurrency, project=project)  # fmt: skip
    body["benchmark_requests"] = benchmark_requests
    client = _Client(api, api_key)
    dep = client.call("POST", "/deployments", json=body)
    if wait:
        if not as_json:
            typer.echo(f"deployment {dep['id']} ({dep['name']}): pipeline run {dep['pipeline_run_id']}")
        dep = _follow(client, dep["id"], done=("running", "failed"), quiet=as_json)
    _print_json(dep) if as_json else _show(dep)
    if dep["status"] == "failed":
        raise typer.Exit(1)


def deployments_list(
    all_: Annotated[bool, typer.Option("--all", help="Deleted ones too.")] = False,
    as_json: JsonOption = False,
    api: ApiUrlOption = DEFAULT_API,
    api_key: ApiKeyOption = None,
) -> None:
    """List deployments (of your projects)."""
    deps = _Client(api, api_key).call("GET", "/deployments", params={"include_deleted": str(all_).lower()})["data"]
    if as_json:
        _print_json(deps)
        return
    table = Table(title="Deployments")
    for column in ("id", "name", "model", "cluster", "engine", "status", "ttft ms pred/meas", "tpot ms pred/meas", "created"):
        table.add_column(column, overflow="fold")
    for d in deps:
        table.add_row(d["id"], d["name"], d["model"], d["cluster"], d["engine"], _status(d),
                      _pair(d, "ttft_ms"), _pair(d, "tpot_ms"), _when(d["created_at"]))  # fmt: skip
    _console().print(table)


def deployments_get(
    deployment: DeploymentArg, as_json: JsonOption = False, api: ApiUrlOption = DEFAULT_API, api_key: ApiKeyOption = None
) -> None:
    """Show a deployment: status, pipeline run, configuration, predicted and measured figures."""
    dep = _Client(api, api_key).call("GET", f"/deployments/{deployment}")
    _print_json(dep) if as_json else _show(dep)


def deployments_scale(
    deployment: DeploymentArg,
    replicas: ReplicasOption = None,
    min_replicas: Annotated[int | None, typer.Option("--min-replicas", min=0, help="Autoscaling lower bound (vLLM).")] = None,
    max_replicas: Annotated[int | None, typer.Option("--max-replicas", min=1, help="Autoscaling upper bound (vLLM).")] = None,
    as_json: JsonOption = False,
    api: ApiUrlOption = DEFAULT_API,
    api_key: ApiKeyOption = None,
) -> None:
    """Change a running deployment's replicas or autoscaling bounds."""
    body = {k: v for k, v in (("replicas", replicas), ("min_replicas", min_replicas), ("max_replicas", max_replicas))
            if v is not None}  # fmt: skip
    dep = _Client(api, api_key).call("PATCH", f"/deployments/{deployment}", json=body)
    _print_json(dep) if as_json else _show(dep)


def deployments_delete(
    deployment: DeploymentArg, wait: WaitOption = False, as_json: JsonOption = False,
    api: ApiUrlOption = DEFAULT_API, api_key: ApiKeyOption = None,
) -> None:  # fmt: skip
    """Drain and delete: unregister from the gateway, wait for requests in flight, remove."""
    client = _Client(api, api_key)
    dep = client.call("DELETE", f"/deployments/{deployment}")
    if wait:
        dep = _follow(client, dep["id"], done=("deleted", "failed"), quiet=as_json)
    _print_json(dep) if as_json else typer.echo(f"deployment {dep['id']} ({dep['name']}): {dep['status']}")
    if dep["status"] == "failed":
        raise typer.Exit(1)


def deployments_render(
    model: Annotated[str, typer.Argument(help="A registered model, or an optimizer catalog id (with --target).")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the YAML.")],
    cluster: ClusterOption = None,
    target: Annotated[TargetChoice | None, typer.Option("--target", help="Render for a cluster not registered: kuberay.")] = None,
    gpu: Annotated[str | None, typer.Option("--gpu", help="GPU type with --target (e.g. h100_sxm, l4).")] = None,
    num_gpus: Annotated[int | None, typer.Option("--num-gpus", min=1, help="GPUs available, with --target.")] = None,
    name: NameOption = None,
    engine: EngineOption = None,
    replicas: ReplicasOption = None,
    slo_ttft_ms: TtftOption = None,
    slo_tpot_ms: TpotOption = None,
    isl: IslOption = 512,
    osl: OslOption = 128,
    concurrency: ConcurrencyOption = 8,
    namespace: Annotated[str | None, typer.Option("--namespace", help="Namespace of the RayService (with --target).")] = None,
    api: ApiUrlOption = DEFAULT_API,
    api_key: ApiKeyOption = None,
) -> None:
    """Write the manifest a deployment would apply (RayService YAML, or the Serve config of a local
    cluster) without deploying anything."""
    if (cluster is None) == (target is None):
        _fail("give --cluster C, or --target kuberay --gpu TYPE --num-gpus N")
    if target is not None:
        if gpu is None or num_gpus is None:
            _fail("--target kuberay needs --gpu TYPE and --num-gpus N")
        from control.rendering import RenderError, render_kuberay_for

        try:
            manifest = render_kuberay_for(
                model, gpu=gpu, num_gpus=num_gpus, name=name, isl=isl, osl=osl, concurrency=concurrency,
                slo_ttft_ms=slo_ttft_ms, slo_tpot_ms=slo_tpot_ms, replicas=replicas, namespace=namespace,
            )  # fmt: skip
        except RenderError as exc:
            _fail(str(exc))
        kind = "RayService"
    else:
        body = _request(model, cluster, name=name, engine=engine, replicas=replicas, slo_ttft_ms=slo_ttft_ms,
                        slo_tpot_ms=slo_tpot_ms, isl=isl, osl=osl, concurrency=concurrency)  # fmt: skip
        rendered = _Client(api, api_key).call("POST", "/deployments/render", json=body)
        manifest, kind = rendered["manifest"], {"rayservice": "RayService", "serve_config": "Serve config"}[rendered["kind"]]
    out.write_text(yaml.safe_dump(manifest, sort_keys=False))
    typer.echo(f"wrote the {kind} to {out}")


# --- helpers ---------------------------------------------------------------------------------


def _request(model: str, cluster: str, **fields: Any) -> dict:
    body = {"model": model, "cluster": cluster}
    for key, value in fields.items():
        if value is not None:
            body[key] = value.value if isinstance(value, Enum) else value
    return body


def _follow(client: _Client, dep_id: str, *, done: tuple[str, ...], quiet: bool) -> dict:
    """Poll until the deployment reaches a status in ``done``; print each step as it starts."""
    deadline = time.monotonic() + WAIT_TIMEOUT_S
    seen: tuple | None = None
    while True:
        dep = client.call("GET", f"/deployments/{dep_id}")
        now = (dep["status"], dep.get("step"))
        if now != seen and not quiet:
            progress = f" {dep['progress']:.0f}%" if dep.get("progress") is not None else ""
            typer.echo(f"  {dep['status']}{progress}" + (f" ({dep['step']})" if dep.get("step") else ""))
            seen = now
        if dep["status"] in done:
            return dep
        if time.monotonic() > deadline:
            _fail(f"deployment {dep_id} is still {dep['status']} after {WAIT_TIMEOUT_S:.0f} s")
        time.sleep(POLL_S)


def _status(d: dict) -> str:
    return d["status"] + (f": {d['error']}" if d.get("error") else "")


def _pair(d: dict, key: str) -> str:
    predicted = (d.get("predicted") or {}).get(key)
    measured = (d.get("measured") or {}).get(key)
    return f"{'-' if predicted is None else f'{predicted:g}'} / {'-' if measured is None else f'{measured:g}'}"


def _show(d: dict) -> None:
    typer.echo(f"{d['name']} ({d['id']}): {_status(d)}")
    typer.echo(f"  model {d['model']} on cluster {d['cluster']}, engine {d['engine']}, pipeline run {d['pipeline_run_id']}")
    choice = (d.get("config") or {}).get("choice")
    if choice:
        typer.echo("  config: " + ", ".join(f"{k}={v}" for k, v in choice.items()))
    typer.echo(f"  TTFT ms predicted/measured: {_pair(d, 'ttft_ms')}; TPOT ms: {_pair(d, 'tpot_ms')}")
