"""control.planning: what a deployment runs, from the cluster's inventory and the request."""

from __future__ import annotations

import pytest

from control.models import Cluster, RegisteredModel
from control.planning import PlanError, catalog_gpu, plan

TINY = RegisteredModel(name="foundry-tiny", kind="builtin", source="builtin:foundry-tiny", path=None)
H100_NODE = {"totals": {"gpus": 8, "cpus": 64}, "gpus_by_type": {"NVIDIA-H100-80GB-HBM3": 8}}


def cpu_cluster() -> Cluster:
    return Cluster(name="local", kind="local", inventory={"totals": {"gpus": 0, "cpus": 2}, "gpus_by_type": {}})


@pytest.mark.parametrize(
    ("product", "name"),
    [("NVIDIA-H100-80GB-HBM3", "h100_sxm"), ("H100", "h100_sxm"), ("NVIDIA-H200", "h200_sxm"),
     ("NVIDIA-A100-SXM4-40GB", "a100_sxm_40gb"), ("A100-80G", "a100_sxm_80gb"), ("NVIDIA-L4", "l4"),
     ("NVIDIA-L40S", "l40s"), ("NVIDIA-A10G", "a10g"), ("AMD-Instinct-MI300X-OAM", "mi300x"), ("Tesla-T4", None)],
)  # fmt: skip
def test_gpu_products_map_to_the_optimizer_catalog(product, name):
    assert catalog_gpu(product) == name


def test_a_cpu_cluster_runs_the_cpu_engine_sized_to_the_concurrency():
    config, predicted = plan(TINY, cpu_cluster(), "cpu", {"concurrency": 20, "replicas": 2}, "tiny")
    assert config["runtime"] == {"engine": "cpu", "model": "builtin:foundry-tiny", "replicas": 2, "max_num_seqs": 10}
    assert "basis" in predicted  # no prediction is made up for the CPU engine


def test_given_settings_are_taken_and_checked_against_the_cluster():
    gpu = Cluster(name="k", kind="kubernetes", inventory=H100_NODE)
    config, _ = plan(TINY, gpu, "vllm", {"replicas": 2, "settings": {"gpu": "h100_sxm", "tensor_parallel_size": 4,
                                                                     "max_num_seqs": 64}}, "x")  # fmt: skip
    assert config["runtime"]["tensor_parallel_size"] == 4 and config["runtime"]["replicas"] == 2
    assert config["choice"]["gpus_per_replica"] == 4 and config["target"]["gpu"] == "h100_sxm"
    with pytest.raises(PlanError, match="no l4 GPUs"):
        plan(TINY, gpu, "vllm", {"settings": {"gpu": "l4"}}, "x")
    with pytest.raises(PlanError, match="do not fit"):
        plan(TINY, gpu, "vllm", {"replicas": 3, "settings": {"gpu": "h100_sxm", "tensor_parallel_size": 4}}, "x")
    with pytest.raises(PlanError, match="no l4 GPUs"):
        plan(TINY, cpu_cluster(), "cpu", {"settings": {"gpu": "l4"}}, "x")
    with pytest.raises(PlanError, match="needs GPUs"):
        plan(TINY, cpu_cluster(), "cpu", {"settings": {"tensor_parallel_size": 2}}, "x")


def test_a_kubernetes_cluster_without_gpus_or_with_unknown_ones_is_refused_with_the_reason():
    with pytest.raises(PlanError, match="no allocatable nvidia.com/gpu"):
        plan(TINY, Cluster(name="k", kind="kubernetes", inventory={"totals": {"gpus": 0}}), "vllm", {}, "x")
    odd = Cluster(name="k", kind="kubernetes", inventory={"totals": {"gpus": 4}, "gpus_by_type": {"Tesla-T4": 4}})
    with pytest.raises(PlanError, match="does not know"):
        plan(TINY, odd, "vllm", {}, "x")
