"""The optimizer's choice as a KubeRay ``RayService`` (or, for a local Ray cluster, a Serve config).

One deployment is one :class:`RayServicePlan`; :func:`render_rayservice` turns it into the
manifest, which always passes :func:`control.kuberay.admit`::

    RayService NAME                          annotations: ray.io/initializing-timeout, foundry.ai/*
      serveConfigV2 (YAML)                   serve.endpoint: runtime-MODEL (the vLLM runtime table)
                                             + gateway under /v1, key from $FOUNDRY_ENDPOINT_KEY
      upgradeStrategy: NewCluster            a changed spec comes up beside the old cluster
      rayClusterConfig
        enableInTreeAutoscaling              when minReplicas < maxReplicas
        headGroupSpec                        num-cpus 0, num-gpus 0: Serve's controller and proxy only
        workerGroupSpecs[0] "gpu"            one pod per replica (or pods_per_replica pods when a
                                             replica needs more GPUs than a node has), each with
                                             nvidia.com/gpu limits, spare CPUs, /dev/shm, the models
                                             volume, nodeSelector nvidia.com/gpu.product

A replica of ``tp x pp`` GPUs runs on ``pods_per_replica`` pods of ``gpus_per_pod`` GPUs: one
pod when it fits on a node of that GPU (the catalog's ``gpus_per_node``), else the fewest pods
that split it evenly. The runtime table names the GPU as Ray does (``accelerator_type``), which
tells the runtime's builder to place vLLM's workers on GPUs before any GPU pod has joined, and
the worker group declares that resource so the autoscaler knows which pods supply it.

The entry point for a cluster that is not registered (``foundry deployments render MODEL
--target kuberay --gpu TYPE --num-gpus N``) is :func:`render_for_target`: the optimizer's search
on that GPU budget, then the manifest of its best pick, whose GPUs at full scale fit the budget.

Examples in ``cluster_configs/kuberay/`` are written by this module (and a test checks they
are what it writes today)::

    python -m control.kuberay.manifests --examples cluster_configs/kuberay

Errors (all :class:`control.errors.InvalidRequest`, 400)::

    RenderError                       base
    ├── UnsupportedGPU                the GPU has no KubeRay node label here (AMD, the CPU entry)
    └── NothingFits                   no configuration of the model fits the GPUs given
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import math
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

from control.errors import InvalidRequest
from control.kuberay.schema import admit
from serve.config import AutoscalingConfig, VLLMRuntimeConfig, runtime_from_deployment_spec
from serve.endpoint import DEFAULT_KEY_ENV, EndpointConfig, serve_applications

if TYPE_CHECKING:
    from tune.search.space import Evaluation

__all__ = [
    "GPU_PRODUCTS",
    "IMAGE",
    "NothingFits",
    "RayServicePlan",
    "RenderError",
    "UnsupportedGPU",
    "plan_for_runtime",
    "plan_from_evaluation",
    "rayservice_name",
    "render_for_target",
    "render_rayservice",
    "render_serve_config",
    "to_yaml",
    "write_examples",
]

IMAGE_REPOSITORY = "ghcr.io/foundry/foundry"
IMAGE = f"{IMAGE_REPOSITORY}:{importlib.metadata.version('foundry')}"  # what the repo's Dockerfile builds
RAY_VERSION = importlib.metadata.version("ray")
MAX_NAME_LENGTH = 47  # the operator's limit for RayService names
MODELS_MOUNT = "/models"
INITIALIZING_TIMEOUT_ANNOTATION = "ray.io/initializing-timeout"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
KEY_SECRET_KEY = "api-key"
SERVE_PORT = 8000

# tune.catalog.hardware names -> the nvidia.com/gpu.product label NVIDIA GPU feature discovery
# puts on nodes (the driver's product name, spaces as dashes).
GPU_PRODUCTS = {
    "h100_sxm": "NVIDIA-H100-80GB-HBM3",
    "h200_sxm": "NVIDIA-H200",
    "b200_sxm": "NVIDIA-B200",
    "b300_sxm": "NVIDIA-B300-SXM6-AC",
    "gb200": "NVIDIA-GB200",
    "gb300": "NVIDIA-GB300",
    "a100_sxm_40gb": "NVIDIA-A100-SXM4-40GB",
    "a100_sxm_80gb": "NVIDIA-A100-SXM4-80GB",
    "l40s": "NVIDIA-L40S",
    "l4": "NVIDIA-L4",
    "a10g": "NVIDIA-A10G",
}


class RenderError(InvalidRequest):
    """A manifest cannot be rendered for what was asked."""


class UnsupportedGPU(RenderError):
    def __init__(self, gpu: str) -> None:
        super().__init__(
            f"GPU {gpu!r} cannot be targeted on KubeRay here; known: {', '.join(sorted(GPU_PRODUCTS))}",
            param="gpu", code="unsupported_gpu",
        )  # fmt: skip


class NothingFits(RenderError):
    def __init__(self, message: str) -> None:
        super().__init__(message, param="num_gpus", code="no_configuration")


def _catalog_gpu(gpu: str) -> str:
    """The optimizer's name of ``gpu``: a catalog name (``h100_sxm``), or a GPU product string as
    Ray or NVIDIA GPU feature discovery write it (``H100``, ``NVIDIA-L4``)."""
    from control.planning import catalog_gpu
    from tune.catalog.hardware import get_gpu
    from tune.errors import TuneError

    try:
        name = get_gpu(gpu).name
    except TuneError:
        name = catalog_gpu(gpu) or ""
    if name not in GPU_PRODUCTS:
        raise UnsupportedGPU(gpu)
    return name


class RayServicePlan(BaseModel):
    """Everything a RayService of one endpoint needs. Build it with :func:`plan_from_evaluation`
    (or :func:`render_for_target`), or by hand from a runtime table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="the RayService's name: a DNS-1035 label of at most 47 characters")
    namespace: str = "default"
    served_model_name: str = Field(min_length=1, description="the model name clients send to the endpoint")
    runtime: VLLMRuntimeConfig = Field(description="the vLLM runtime table; its model is a directory on the pods")
    gpu: str = Field(description="the optimizer's GPU name (tune.catalog.hardware), e.g. h100_sxm")
    replicas: PositiveInt = Field(description="replicas to start with (the optimizer's choice)")
    min_replicas: PositiveInt
    max_replicas: PositiveInt
    target_ongoing_requests: float = Field(default=16, gt=0, description="per replica, what Serve's autoscaler aims at")
    image: str = IMAGE
    cpus_per_worker: PositiveInt | None = Field(default=None, description="default: a CPU per GPU worker, the replica's own, and spare")
    memory_gib_per_worker: PositiveInt | None = Field(default=None, description="default: 4 GiB + 8 GiB per GPU")
    head_cpus: PositiveInt = 2
    head_memory_gib: PositiveInt = 8
    key_secret: str | None = Field(default=None, description="the Secret holding the endpoint's key; default NAME-key")
    models_pvc: str | None = Field(default="foundry-models", description=f"a claim mounted read-only at {MODELS_MOUNT}; None: none")
    initializing_timeout_s: PositiveInt = Field(default=1800, description="the operator gives up on a cluster after this long")
    annotations: dict[str, str] = {}

    @model_validator(mode="after")
    def _check(self) -> RayServicePlan:
        if len(self.name) > MAX_NAME_LENGTH or not _DNS1035.match(self.name):
            raise ValueError(f"name {self.name!r} is not a DNS-1035 label of at most {MAX_NAME_LENGTH} characters")
        if self.gpu not in GPU_PRODUCTS:
            raise ValueError(f"gpu {self.gpu!r} has no KubeRay node label; known: {', '.join(sorted(GPU_PRODUCTS))}")
        if not self.min_replicas <= self.replicas <= self.max_replicas:
            raise ValueError(
                f"replicas ({self.replicas}) must lie within min_replicas ({self.min_replicas}) and max_replicas ({self.max_replicas})"
            )
        return self

    # --- shape ---------------------------------------------------------------------------------

    @property
    def gpus_per_replica(self) -> int:
        return self.runtime.tensor_parallel_size * self.runtime.pipeline_parallel_size

    @property
    def gpus_per_pod(self) -> int:
        """The largest split of a replica's GPUs that fits on one node of this GPU."""
        from tune.catalog.hardware import get_gpu

        per_node = get_gpu(self.gpu).gpus_per_node
        return max(d for d in range(1, min(per_node, self.gpus_per_replica) + 1) if self.gpus_per_replica % d == 0)

    @property
    def pods_per_replica(self) -> int:
        return self.gpus_per_replica // self.gpus_per_pod

    @property
    def max_gpus(self) -> int:
        """GPUs the RayService asks for at full scale."""
        return self.max_replicas * self.gpus_per_replica

    @property
    def worker_cpus(self) -> int:
        if self.cpus_per_worker is not None:
            return self.cpus_per_worker
        # one per vLLM worker (their placement bundles), the replica process, and as many spare
        # for the gateway, tokenizers and Ray's own processes
        return 2 * self.gpus_per_pod + math.ceil(self.runtime.num_cpus)

    @property
    def worker_memory_gib(self) -> int:
        return self.memory_gib_per_worker or 4 + 8 * self.gpus_per_pod

    @property
    def secret_name(self) -> str:
        return self.key_secret or f"{self.name}-key"

    @property
    def accelerator_type(self) -> str:
        from tune.search.deploy import RAY_ACCELERATOR_TYPES

        return RAY_ACCELERATOR_TYPES[self.gpu]

    def endpoint(self) -> EndpointConfig:
        """The ``args`` of the Serve applications: the runtime pinned to this GPU type, with
        fixed replicas or Serve autoscaling within the bounds."""
        table = self.runtime.model_dump(exclude={"replicas", "autoscaling", "accelerator_type"}, exclude_defaults=True)
        table |= {"engine": "vllm", "accelerator_type": self.accelerator_type}
        if self.min_replicas == self.max_replicas:
            table["replicas"] = self.replicas
        else:
            table["autoscaling"] = AutoscalingConfig(
                min_replicas=self.min_replicas, max_replicas=self.max_replicas,
                target_ongoing_requests=self.target_ongoing_requests,
            ).model_dump()  # fmt: skip
        return EndpointConfig(name=self.served_model_name, runtime=table, key_env=DEFAULT_KEY_ENV)


_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def rayservice_name(model: str) -> str:
    """A valid RayService name for ``model``: its last path part, lower-cased, other characters
    as dashes, at most 47 characters (a longer one keeps its start and gains a hash of the whole,
    so two long names stay apart). Deterministic.

    >>> rayservice_name("meta-llama/Llama-3.1-70B-Instruct")
    'llama-3-1-70b-instruct'
    >>> rayservice_name("7B_chat")
    'm-7b-chat'
    """
    base = model.rstrip("/").rsplit("/", 1)[-1].lower()
    name = re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", base)).strip("-") or "foundry"
    if not name[0].isalpha():
        name = f"m-{name}"
    if len(name) > MAX_NAME_LENGTH:
        digest = hashlib.sha256(model.encode()).hexdigest()[:8]
        name = f"{name[: MAX_NAME_LENGTH - 9].rstrip('-')}-{digest}"
    return name


def plan_from_evaluation(
    model: str,
    evaluation: Evaluation,
    *,
    isl: int,
    osl: int,
    name: str | None = None,
    served_model_name: str | None = None,
    namespace: str = "default",
    model_path: str | None = None,
    num_gpus: int | None = None,
    replicas: int | None = None,
    min_replicas: int | None = None,
    max_replicas: int | None = None,
    **plan_fields: Any,
) -> RayServicePlan:
    """The plan of the optimizer's pick ``evaluation`` of ``model`` (a catalog id or a path).

    The runtime table is ``tune.search.deploy.deployment_spec`` as
    ``serve.config.runtime_from_deployment_spec`` reads it, its model ``model_path`` (default
    ``/models/<last part of model>``, on the models volume). Replicas start at the pick's count;
    with ``num_gpus`` the bounds are 1 to as many replicas as those GPUs hold, else fixed.
    Serve's autoscaler aims at the batch the optimizer priced per replica.
    """
    from tune.search.deploy import deployment_spec

    c = evaluation.candidate
    gpu = _catalog_gpu(c.gpu)
    path = model_path or f"{MODELS_MOUNT}/{model.rstrip('/').rsplit('/', 1)[-1]}"
    runtime = runtime_from_deployment_spec(deployment_spec(path, evaluation, isl=isl, osl=osl))
    per_replica = c.tp * c.pp
    start = replicas or c.replicas
    if num_gpus is not None:
        budget = num_gpus // per_replica
        if budget < 1 or start > budget:
            raise NothingFits(
                f"{max(start, 1)} replica(s) of {per_replica} {gpu} GPUs (TP {c.tp} x PP {c.pp}) do not fit in {num_gpus} GPUs"
            )
        low, high = min_replicas or 1, max_replicas or budget
        if high * per_replica > num_gpus:
            raise NothingFits(f"max_replicas {high} x {per_replica} GPUs exceeds the {num_gpus} GPUs given")
    else:
        low, high = min_replicas or start, max_replicas or start
    annotations = {
        "foundry.ai/model": model,
        "foundry.ai/choice": json.dumps(
            {"gpu": gpu, "tp": c.tp, "pp": c.pp, "replicas": c.replicas, "max_num_seqs": c.max_num_seqs,
             "precision": c.precision, "max_num_batched_tokens": c.max_num_batched_tokens}, sort_keys=True),
        "foundry.ai/predicted": json.dumps(
            {"ttft_ms": round(evaluation.ttft_ms, 1), "tpot_ms": round(evaluation.tpot_ms, 2),
             "ttft_ms_p90": round(evaluation.ttft_bound_ms, 1), "tpot_ms_p90": round(evaluation.tpot_bound_ms, 2),
             "meets_slo": evaluation.meets_slo}, sort_keys=True),
    }  # fmt: skip
    served = served_model_name or name or model.rstrip("/").rsplit("/", 1)[-1]
    return RayServicePlan(
        name=rayservice_name(name or model), namespace=namespace, served_model_name=served, runtime=runtime,
        gpu=gpu, replicas=start, min_replicas=low, max_replicas=high,
        target_ongoing_requests=max(1, evaluation.batch_per_replica), annotations=annotations, **plan_fields,
    )  # fmt: skip


def plan_for_runtime(
    name: str,
    runtime: VLLMRuntimeConfig | dict[str, Any],
    *,
    gpu: str,
    namespace: str = "default",
    served_model_name: str | None = None,
    **plan_fields: Any,
) -> RayServicePlan:
    """The plan of a vLLM runtime table already chosen (``control.planning``'s ``config["runtime"]``),
    on ``gpu`` (a catalog name or a product string the catalog knows). Its ``replicas``, or its
    ``[autoscaling]`` bounds, become the worker group's; ``runtime.model`` must be a path on the pods.

    >>> p = plan_for_runtime("chat", {"engine": "vllm", "model": "/models/m", "tensor_parallel_size": 2}, gpu="H100")
    >>> p.name, p.gpu, p.gpus_per_pod, (p.min_replicas, p.replicas, p.max_replicas)
    ('chat', 'h100_sxm', 2, (1, 1, 1))
    """
    table = runtime if isinstance(runtime, VLLMRuntimeConfig) else VLLMRuntimeConfig.model_validate(runtime)
    if table.autoscaling is not None:
        low, high = max(1, table.autoscaling.min_replicas), table.autoscaling.max_replicas
        start = low
        plan_fields.setdefault("target_ongoing_requests", table.autoscaling.target_ongoing_requests)
    else:
        low = high = start = table.replicas
    return RayServicePlan(
        name=rayservice_name(name), namespace=namespace, served_model_name=served_model_name or name,
        runtime=table, gpu=_catalog_gpu(gpu), replicas=start, min_replicas=low, max_replicas=high, **plan_fields,
    )  # fmt: skip


def render_rayservice(plan: RayServicePlan) -> dict[str, Any]:
    """The ``ray.io/v1`` RayService of ``plan`` (a dict, as ``yaml.safe_load`` would give it),
    checked with :func:`control.kuberay.admit` (a :class:`~control.kuberay.ManifestInvalid` here
    is a bug of this module). Returned as written, without the defaults the API server adds."""
    manifest = _rayservice(plan)
    admit(manifest)
    return manifest


def _rayservice(plan: RayServicePlan) -> dict[str, Any]:
    def env() -> list[dict[str, Any]]:  # a list per container: no YAML anchors in the output
        secret = {"secretKeyRef": {"name": plan.secret_name, "key": KEY_SECRET_KEY}}
        return [{"name": DEFAULT_KEY_ENV, "valueFrom": secret}, {"name": "HF_HUB_OFFLINE", "value": "1"},
                {"name": "TOKENIZERS_PARALLELISM", "value": "false"}]  # fmt: skip

    shm = {"name": "dshm", "emptyDir": {"medium": "Memory"}}
    head = {
        "rayStartParams": {"num-cpus": "0", "num-gpus": "0", "dashboard-host": "0.0.0.0"},
        "template": {"spec": {"containers": [{
            "name": "ray-head",
            "image": plan.image,
            "env": env(),
            "ports": [
                {"containerPort": 6379, "name": "gcs-server"},
                {"containerPort": 8265, "name": "dashboard"},
                {"containerPort": 10001, "name": "client"},
                {"containerPort": SERVE_PORT, "name": "serve"},
            ],
            "resources": _resources(plan.head_cpus, plan.head_memory_gib),
        }]}},
    }  # fmt: skip
    mounts = [{"name": "dshm", "mountPath": "/dev/shm"}]
    volumes = [shm]
    if plan.models_pvc:
        mounts.append({"name": "models", "mountPath": MODELS_MOUNT, "readOnly": True})
        volumes.append({"name": "models", "persistentVolumeClaim": {"claimName": plan.models_pvc, "readOnly": True}})
    per_replica_pods = plan.pods_per_replica
    worker = {
        "groupName": "gpu",
        "replicas": plan.replicas * per_replica_pods,
        "minReplicas": plan.min_replicas * per_replica_pods,
        "maxReplicas": plan.max_replicas * per_replica_pods,
        "rayStartParams": {
            "num-gpus": str(plan.gpus_per_pod),
            # the autoscaler learns from this which pods supply the runtime's pinned GPU type
            "resources": json.dumps(json.dumps({f"accelerator_type:{plan.accelerator_type}": 1})),
        },
        "template": {"spec": {
            "containers": [{
                "name": "ray-worker",
                "image": plan.image,
                "env": env(),
                "resources": _resources(plan.worker_cpus, plan.worker_memory_gib, gpus=plan.gpus_per_pod),
                "volumeMounts": mounts,
            }],
            "volumes": volumes,
            "nodeSelector": {GPU_PRODUCT_LABEL: GPU_PRODUCTS[plan.gpu]},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        }},
    }  # fmt: skip
    cluster: dict[str, Any] = {"rayVersion": RAY_VERSION}
    if plan.min_replicas < plan.max_replicas:
        cluster["enableInTreeAutoscaling"] = True
    cluster |= {"headGroupSpec": head, "workerGroupSpecs": [worker]}
    serve_config = {"applications": serve_applications(plan.endpoint())}
    annotations = {INITIALIZING_TIMEOUT_ANNOTATION: f"{plan.initializing_timeout_s}s", **plan.annotations}
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {
            "name": plan.name,
            "namespace": plan.namespace,
            "labels": {"app.kubernetes.io/name": plan.name, "app.kubernetes.io/managed-by": "foundry"},
            "annotations": annotations,
        },
        "spec": {
            "upgradeStrategy": {"type": "NewCluster"},
            "serveConfigV2": to_yaml(serve_config),
            "rayClusterConfig": cluster,
        },
    }


class _Dumper(yaml.SafeDumper):
    """Plain YAML for people and for Serve: no anchors, multi-line strings as literal blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _represent_str)


def to_yaml(obj: Any) -> str:
    """``obj`` as YAML the way the examples are written: keys in order, no anchors, the
    ``serveConfigV2`` string as a literal block. ``yaml.safe_load`` reads it back unchanged."""
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, width=120)


def _resources(cpus: int, memory_gib: int, *, gpus: int = 0) -> dict[str, dict[str, str]]:
    amounts = {"cpu": str(cpus), "memory": f"{memory_gib}Gi"}
    if gpus:
        amounts["nvidia.com/gpu"] = str(gpus)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def render_serve_config(name: str, runtime: dict[str, Any], *, key_env: str = DEFAULT_KEY_ENV) -> dict[str, Any]:
    """The Serve config of one endpoint on a Ray cluster that is not KubeRay's (``serve deploy``
    or the dashboard's ``PUT /api/serve/applications/``): the same applications a RayService's
    ``serveConfigV2`` holds. ``runtime`` is a runtime table (CPU or vLLM)."""
    return {"applications": serve_applications(EndpointConfig(name=name, runtime=runtime, key_env=key_env))}


def render_for_target(
    model: str,
    *,
    gpu: str,
    num_gpus: int,
    isl: int = 512,
    osl: int = 128,
    concurrency: int = 8,
    slo_ttft_ms: float | None = None,
    slo_tpot_ms: float | None = None,
    name: str | None = None,
    namespace: str | None = None,
    replicas: int | None = None,
    model_path: str | None = None,
    seed: int = 0,
    **plan_fields: Any,
) -> tuple[RayServicePlan, dict[str, Any]]:
    """``(plan, manifest)`` for a KubeRay cluster of ``num_gpus`` GPUs of type ``gpu``: the
    optimizer's search (``tune.optimize``) for ``model`` (a catalog id such as
    ``meta-llama/Llama-3.1-70B-Instruct``) under the workload and SLOs, then the RayService of its
    best pick (admitted, as every rendered manifest); its GPUs at full scale fit in ``num_gpus``. Raises :class:`UnsupportedGPU` or :class:`NothingFits`.
    """
    import tune
    from control.planning import DEFAULT_SLO_TPOT_MS, DEFAULT_SLO_TTFT_MS

    catalog = _catalog_gpu(gpu)
    try:
        space = tune.SearchSpace(
            model=model, gpus=(catalog,), num_gpus=num_gpus, isl=isl, osl=osl, concurrency=concurrency,
            slo_ttft_ms=slo_ttft_ms or DEFAULT_SLO_TTFT_MS, slo_tpot_ms=slo_tpot_ms or DEFAULT_SLO_TPOT_MS,
        )  # fmt: skip
        result = tune.optimize(space, search="ga", seed=seed)
    except tune.TuneError as exc:
        raise NothingFits(str(exc)) from None
    if result.best is None:
        raise NothingFits(f"no configuration of {model} fits in {num_gpus} {catalog} GPUs")
    plan = plan_from_evaluation(
        model, result.best, isl=isl, osl=osl, name=name, namespace=namespace or "default",
        model_path=model_path, num_gpus=num_gpus, replicas=replicas, **plan_fields,
    )  # fmt: skip
    return plan, render_rayservice(plan)


# --- examples ----------------------------------------------------------------------------------

# (file, model, GPU, GPUs, workload) of each example in cluster_configs/kuberay/
EXAMPLES: tuple[tuple[str, str, str, int, dict[str, Any]], ...] = (
    ("llama-3.1-8b.l4x1.yaml", "meta-llama/Llama-3.1-8B-Instruct", "l4", 1,
     {"isl": 1024, "osl": 256, "concurrency": 8, "slo_ttft_ms": 2000, "slo_tpot_ms": 100}),
    ("llama-3.1-8b.a10gx1.yaml", "meta-llama/Llama-3.1-8B-Instruct", "a10g", 1,
     {"isl": 1024, "osl": 256, "concurrency": 8, "slo_ttft_ms": 2000, "slo_tpot_ms": 100}),
    ("llama-3.1-70b.h100x8.yaml", "meta-llama/Llama-3.1-70B-Instruct", "h100_sxm", 8,
     {"isl": 2048, "osl": 512, "concurrency": 64, "slo_ttft_ms": 1000, "slo_tpot_ms": 50}),
)  # fmt: skip
LOCAL_EXAMPLE = ("foundry-tiny.serve.yaml", "foundry-tiny", {"engine": "cpu", "model": "builtin:foundry-tiny"})
_HEADER = "# Generated by `python -m control.kuberay.manifests --examples cluster_configs/kuberay`; do not edit.\n"


def example_files() -> dict[str, str]:
    """File name -> text of every example (what :func:`write_examples` writes)."""
    files = {}
    for file, model, gpu, num_gpus, workload in EXAMPLES:
        plan, manifest = render_for_target(model, gpu=gpu, num_gpus=num_gpus, **workload)
        command = (
            f"# foundry deployments render {model} --target kuberay --gpu {gpu} --num-gpus {num_gpus} "
            + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in workload.items())
            + f"\n# Needs: the Secret {plan.secret_name} (key {KEY_SECRET_KEY}: the endpoint's API key) and the PVC "
            f"{plan.models_pvc} holding {plan.runtime.model}.\n"
        )
        files[file] = _HEADER + command + to_yaml(manifest)
    file, name, runtime = LOCAL_EXAMPLE
    command = f"# A Serve config for a local Ray cluster: serve deploy {file} (with ${DEFAULT_KEY_ENV} set on its nodes)\n"
    files[file] = _HEADER + command + to_yaml(render_serve_config(name, runtime))
    return files


def write_examples(directory: str | Path) -> list[Path]:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for file, text in example_files().items():
        (out / file).write_text(text)
        written.append(out / file)
    return written


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m control.kuberay.manifests", description=__doc__.split("\n")[0])
    parser.add_argument("--examples", metavar="DIR", required=True, help="write the example manifests into DIR")
    args = parser.parse_args(argv)
    for path in write_examples(args.examples):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
