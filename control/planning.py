"""A deployment's configuration: what to run, on what, and what it should do.

- GPUs in the cluster (Kubernetes, or a Ray cluster with GPU nodes): ``tune``'s search over the
  cluster's GPU types and count under the deployment's SLOs and workload; the best pick becomes a
  vLLM runtime table (``serve.config.runtime_from_deployment_spec``), its prediction the
  ``predicted`` figures (p50 and the p90 bound).
- No GPUs (the local CPU cluster): the CPU engine (or vLLM's CPU build) with the settings the
  deployment gives, else defaults sized to its concurrency; no prediction (the optimizer models
  GPUs), so ``predicted`` says so and the benchmark step measures.

:func:`plan` is pure CPU work (the search takes about a second or two): run it off the event loop.

    >>> from control.planning import catalog_gpu
    >>> catalog_gpu("NVIDIA-H100-80GB-HBM3"), catalog_gpu("H100"), catalog_gpu("NVIDIA-L4")
    ('h100_sxm', 'h100_sxm', 'l4')
"""

from __future__ import annotations

import re
from typing import Any

from control.models import Cluster, RegisteredModel

DEFAULT_SLO_TTFT_MS = 2000.0
DEFAULT_SLO_TPOT_MS = 100.0
CPU_MAX_NUM_SEQS = 16

# GPU names as Ray (accelerator_type) or NVIDIA GPU feature discovery (nvidia.com/gpu.product)
# write them -> the optimizer's catalog. Checked in order: the more specific first.
_GPU_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"gb300", "gb300"), (r"gb200", "gb200"), (r"b300", "b300_sxm"), (r"b200", "b200_sxm"),
    (r"h200", "h200_sxm"), (r"h100", "h100_sxm"), (r"a100.*(40g|40gb)", "a100_sxm_40gb"),
    (r"a100", "a100_sxm_80gb"), (r"l40s", "l40s"), (r"(^|[^a-z0-9])l4($|[^0-9])", "l4"), (r"a10g", "a10g"),
    (r"mi300x", "mi300x"),
)  # fmt: skip


class PlanError(Exception):
    """No configuration can be chosen (the reason names what to change)."""


def catalog_gpu(product: str) -> str | None:
    """The optimizer's name for a GPU product string, or None if the catalog lacks it."""
    text = product.lower()
    for pattern, name in _GPU_PATTERNS:
        if re.search(pattern, text):
            return name
    return None


def plan(
    model: RegisteredModel, cluster: Cluster, engine: str, request: dict[str, Any], name: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(config, predicted)``: ``config["runtime"]`` is the runtime table to deploy,
    ``config["target"]`` what the target needs besides (the GPU type for a RayService)."""
    inventory = cluster.inventory or {}
    gpus = int(inventory.get("totals", {}).get("gpus", 0))
    if request.get("settings"):
        return _given_plan(model, cluster, engine, request)
    if gpus == 0:
        if cluster.kind == "kubernetes":
            raise PlanError(f"cluster {cluster.name!r} has no allocatable nvidia.com/gpu: nothing to run vLLM on")
        return _cpu_plan(model, engine, request)
    return _gpu_plan(model, cluster, request, gpus)


def _model_ref(model: RegisteredModel) -> str:
    if model.kind == "builtin":
        return model.source
    if model.path:
        return model.path
    raise PlanError(f"model {model.name!r} has no local directory to deploy")


def _cpu_plan(model: RegisteredModel, engine: str, request: dict[str, Any]) -> tuple[dict, dict]:
    replicas = request.get("replicas") or 1
    max_num_seqs = request.get("max_num_seqs") or max(1, min(CPU_MAX_NUM_SEQS, -(-int(request.get("concurrency", 8)) // replicas)))
    runtime: dict[str, Any] = {"engine": engine, "model": _model_ref(model), "replicas": replicas, "max_num_seqs": max_num_seqs}
    predicted = {"basis": "none: the optimizer predicts GPU deployments; the benchmark measures this one"}
    config = {"runtime": runtime, "target": {}, "choice": {"engine": engine, "replicas": replicas, "max_num_seqs": max_num_seqs}}
    return config, predicted


def _given_plan(model: RegisteredModel, cluster: Cluster, engine: str, request: dict[str, Any]) -> tuple[dict, dict]:
    """The settings the deployment gives, checked against what the cluster has."""
    from tune.search.deploy import RAY_ACCELERATOR_TYPES

    given = request["settings"]
    replicas = request.get("replicas") or 1
    gpu = given.get("gpu")
    by_type = (cluster.inventory or {}).get("gpus_by_type", {})
    have = {name: int(count) for product, count in by_type.items() if (name := catalog_gpu(product))}
    workers = given.get("tensor_parallel_size", 1) * given.get("pipeline_parallel_size", 1)
    predicted = {"basis": "none: the deployment gave its settings"}
    if gpu is None:
        if workers > 1:
            raise PlanError("tensor or pipeline parallelism needs GPUs: name settings.gpu")
        if cluster.kind == "kubernetes":
            raise PlanError(f"cluster {cluster.name!r} runs vLLM on GPUs: name settings.gpu")
        max_num_seqs = given.get("max_num_seqs") or CPU_MAX_NUM_SEQS
        runtime = {"engine": engine, "model": _model_ref(model), "replicas": replicas, "max_num_seqs": max_num_seqs}
        choice = {"engine": engine, "replicas": replicas, "max_num_seqs": max_num_seqs}
        return {"runtime": runtime, "target": {}, "choice": choice}, predicted
    if gpu not in have:
        raise PlanError(
            f"cluster {cluster.name!r} has no {gpu} GPUs (it has: {', '.join(f'{n}x {g}' for g, n in have.items()) or 'none'})"
        )
    if workers * replicas > have[gpu]:
        raise PlanError(f"{replicas} replica(s) of {workers} {gpu} GPUs do not fit in the cluster's {have[gpu]}")
    runtime = {"engine": "vllm", "model": _model_ref(model), "replicas": replicas,
               "tensor_parallel_size": given.get("tensor_parallel_size", 1),
               "pipeline_parallel_size": given.get("pipeline_parallel_size", 1)}  # fmt: skip
    for key in ("max_num_seqs", "max_num_batched_tokens", "quantization"):
        if given.get(key) is not None:
            runtime[key] = given[key]
    if cluster.kind == "local":
        runtime["accelerator_type"] = RAY_ACCELERATOR_TYPES.get(gpu)
    choice = {"gpu": gpu, "tp": runtime["tensor_parallel_size"], "pp": runtime["pipeline_parallel_size"],
              "replicas": replicas, "max_num_seqs": runtime.get("max_num_seqs"), "gpus_per_replica": workers}  # fmt: skip
    return {"runtime": runtime, "target": {"gpu": gpu, "model_ref": _model_ref(model)}, "choice": choice}, predicted


def _gpu_plan(model: RegisteredModel, cluster: Cluster, request: dict[str, Any], gpus: int) -> tuple[dict, dict]:
    import tune
    from serve.config import runtime_from_deployment_spec
    from tune.search.deploy import deployment_spec

    by_type = (cluster.inventory or {}).get("gpus_by_type", {})
    types = sorted({g for product in by_type if (g := catalog_gpu(product))})
    if not types:
        raise PlanError(
            f"cluster {cluster.name!r} has GPUs the optimizer does not know ({', '.join(by_type) or 'unlabelled'}); "
            "label nodes with nvidia.com/gpu.product"
        )
    num_gpus = max(int(c) for p, c in by_type.items() if catalog_gpu(p))
    ref = _model_ref(model)
    isl, osl = int(request.get("isl", 512)), int(request.get("osl", 128))
    try:
        space = tune.SearchSpace(
            model=ref, gpus=tuple(types), num_gpus=num_gpus, isl=isl, osl=osl,
            concurrency=int(request.get("concurrency", 8)),
            slo_ttft_ms=request.get("slo_ttft_ms") or DEFAULT_SLO_TTFT_MS,
            slo_tpot_ms=request.get("slo_tpot_ms") or DEFAULT_SLO_TPOT_MS,
        )  # fmt: skip
        result = tune.optimize(space, search="ga", seed=0)
    except tune.TuneError as exc:
        raise PlanError(str(exc)) from None
    best = result.best
    if best is None:
        raise PlanError("the optimizer found no configuration that fits")
    runtime = runtime_from_deployment_spec(deployment_spec(ref, best, isl=isl, osl=osl)).model_dump(
        mode="json", exclude_defaults=True
    ) | {"engine": "vllm"}
    if request.get("replicas"):
        runtime["replicas"] = request["replicas"]
    c = best.candidate
    choice = {"gpu": c.gpu, "tp": c.tp, "pp": c.pp, "replicas": runtime.get("replicas", c.replicas),
              "max_num_seqs": c.max_num_seqs, "precision": c.precision, "gpus_per_replica": c.tp * c.pp}  # fmt: skip
    predicted = {
        "ttft_ms": round(best.ttft_ms, 2), "tpot_ms": round(best.tpot_ms, 3),
        "ttft_ms_p90": round(best.ttft_bound_ms, 2), "tpot_ms_p90": round(best.tpot_bound_ms, 3),
        "output_tokens_per_s": round(best.output_tps_total, 1), "meets_slo": best.meets_slo, "case": best.case,
    }  # fmt: skip
    return {"runtime": runtime, "target": {"gpu": c.gpu, "model_ref": ref}, "choice": choice}, predicted
