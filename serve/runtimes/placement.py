"""Where a vLLM replica runs: one Ray placement group per replica.

A replica of ``tensor_parallel_size x pipeline_parallel_size`` (TP x PP) workers reserves, in one
placement group (as Ray Serve LLM does)::

    bundle 0        {"CPU": num_cpus}                 the replica process itself (HTTP-free:
                                                      the engine front end, tokenizer, detokenizer)
    bundles 1..N    GPU: {"GPU": 1, "CPU": 1[, "accelerator_type:H100": 0.001]}
                    CPU: {"CPU": 1}                   one per TP x PP worker

``STRICT_PACK`` (one node) when the workers fit on the largest node, ``PACK`` (spread over nodes
only when needed) otherwise. Reserving a CPU per GPU worker besides the replica's own keeps a
GPU node from being left with no CPU for its workers (ray#59764).

    >>> p = replica_placement(tensor_parallel_size=2, pipeline_parallel_size=1, num_cpus=1,
    ...                       accelerator_type="H100", device="gpu", gpus_per_node=[8])
    >>> p.strategy, p.bundles[1]
    ('STRICT_PACK', {'GPU': 1, 'CPU': 1, 'accelerator_type:H100': 0.001})
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Device = Literal["cpu", "gpu"]


@dataclass(frozen=True)
class Placement:
    bundles: list[dict[str, float]]
    strategy: Literal["STRICT_PACK", "PACK"]


def replica_placement(
    *,
    tensor_parallel_size: int,
    pipeline_parallel_size: int,
    num_cpus: float,
    accelerator_type: str | None,
    device: Device,
    gpus_per_node: list[float],
    cpus_per_node: list[float] | None = None,
) -> Placement:
    """The placement group of one replica, given the cluster's nodes (GPUs and CPUs of each)."""
    workers = tensor_parallel_size * pipeline_parallel_size
    if device == "gpu":
        worker: dict[str, float] = {"GPU": 1, "CPU": 1}
        if accelerator_type:
            worker[f"accelerator_type:{accelerator_type}"] = 0.001
        fits = workers <= max(gpus_per_node, default=0)
    else:
        worker = {"CPU": 1}
        fits = workers + num_cpus <= max(cpus_per_node or [], default=float("inf"))
    bundles = [{"CPU": num_cpus}] + [dict(worker) for _ in range(workers)]
    return Placement(bundles, "STRICT_PACK" if fits else "PACK")


def cluster_device(accelerator_type: str | None) -> Device:
    """``gpu`` when the runtime names a GPU type or the Ray cluster has GPUs, else ``cpu``.
    Call with Ray initialised."""
    import ray

    if accelerator_type:
        return "gpu"
    return "gpu" if ray.cluster_resources().get("GPU", 0) > 0 else "cpu"


def node_capacities() -> tuple[list[float], list[float]]:
    """(GPUs, CPUs) of each alive node. Call with Ray initialised."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return (
        [n["Resources"].get("GPU", 0.0) for n in nodes],
        [n["Resources"].get("CPU", 0.0) for n in nodes],
    )
