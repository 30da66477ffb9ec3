"""Turn a chosen configuration into what deploys it: vLLM engine arguments and Ray Serve
deployment options with placement-group bundles.

One replica of ``tp * pp`` GPUs is one Ray Serve replica whose placement group reserves one
bundle per GPU worker (``{"CPU": 1, "GPU": 1}``); ``STRICT_PACK`` keeps a replica on one node
when it fits in one, ``PACK`` lets a pipeline-parallel replica span nodes otherwise. With
``pin_accelerator=True`` every bundle also asks for a sliver of the node's
``accelerator_type:<GPU>`` resource (as Ray Serve LLM does), which pins replicas to the GPU the
prediction was made for.

Example:
    >>> from tune.search.deploy import placement_group_bundles
    >>> placement_group_bundles(tp=2, pp=2)
    [{'CPU': 1, 'GPU': 1}, {'CPU': 1, 'GPU': 1}, {'CPU': 1, 'GPU': 1}, {'CPU': 1, 'GPU': 1}]
"""

from __future__ import annotations

from typing import Any

from tune.catalog.hardware import get_gpu
from tune.search.space import NATIVE, Evaluation

__all__ = [
    "RAY_ACCELERATOR_TYPES",
    "deployment_spec",
    "placement_group_bundles",
    "ray_serve_deployment",
    "vllm_engine_args",
]

# tune.catalog.hardware names -> ray.util.accelerators constants (the node's accelerator_type resource)
RAY_ACCELERATOR_TYPES = {
    "h100_sxm": "H100", "h200_sxm": "H200", "b200_sxm": "B200", "b300_sxm": "B300",
    "gb200": "GB200", "gb300": "GB300", "a100_sxm_40gb": "A100-40G", "a100_sxm_80gb": "A100-80G",
    "l40s": "L40S", "l4": "L4", "a10g": "A10G", "mi300x": "AMD-Instinct-MI300X-OAM",
}


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def vllm_engine_args(model: str, evaluation: Evaluation, *, isl: int, osl: int,
                     gpu_memory_utilization: float = 0.90) -> dict[str, Any]:
    """Keyword arguments of ``vllm.EngineArgs`` (and ``vllm serve`` flags, dashes for
    underscores) for one replica."""
    c = evaluation.candidate
    return {
        "model": model,
        "tensor_parallel_size": c.tp,
        "pipeline_parallel_size": c.pp,
        "max_num_seqs": c.max_num_seqs,
        "max_model_len": _round_up(isl + osl, 256),
        "max_num_batched_tokens": c.max_num_batched_tokens,
        "enable_chunked_prefill": True,
        "gpu_memory_utilization": gpu_memory_utilization,
        "quantization": None if c.precision == NATIVE else c.precision,
    }


def placement_group_bundles(
    tp: int, pp: int, *, accelerator_type: str | None = None
) -> list[dict[str, float]]:
    """One bundle per GPU worker of a replica."""
    bundle: dict[str, float] = {"CPU": 1, "GPU": 1}
    if accelerator_type:
        bundle[f"accelerator_type:{accelerator_type}"] = 0.001
    return [dict(bundle) for _ in range(tp * pp)]


def ray_serve_deployment(
    name: str, evaluation: Evaluation, *, pin_accelerator: bool = False
) -> dict[str, Any]:
    """Options for ``serve.deployment(...)`` / a Serve config's ``deployments`` entry."""
    c = evaluation.candidate
    gpu = get_gpu(c.gpu)
    per_replica = c.tp * c.pp
    options: dict[str, Any] = {
        "name": name,
        "num_replicas": c.replicas,
        "max_ongoing_requests": c.max_num_seqs,
        "placement_group_bundles": placement_group_bundles(
            c.tp, c.pp,
            accelerator_type=RAY_ACCELERATOR_TYPES.get(c.gpu) if pin_accelerator else None,
        ),
        "placement_group_strategy": "STRICT_PACK" if per_replica <= gpu.gpus_per_node else "PACK",
        "ray_actor_options": {"num_cpus": 0},
    }
    return options


def deployment_spec(model: str, evaluation: Evaluation, *, isl: int, osl: int) -> dict[str, Any]:
    """Both halves together: ``{"vllm": {...}, "ray_serve": {...}}``."""
    name = model.rsplit("/", 1)[-1].replace(".", "-")
    return {
        "vllm": vllm_engine_args(model, evaluation, isl=isl, osl=osl),
        "ray_serve": ray_serve_deployment(name, evaluation),
    }
