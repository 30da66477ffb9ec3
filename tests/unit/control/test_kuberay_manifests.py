"""control.kuberay.manifests: the RayService of an optimizer pick, admitted as KubeRay would.

Plans built by hand cover the shapes (a replica on one pod, a replica split over pods, the
autoscaling bounds); the examples in ``cluster_configs/kuberay`` are regenerated (through the
optimizer's search) and must equal the committed files, and admit against the shipped CRDs and
the upstream copy in ``../shared/reference/kuberay`` (skipped when that folder is absent).
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from ray.serve.schema import ServeDeploySchema

from control.kuberay import Definitions, ManifestInvalid, admit
from control.kuberay.manifests import EXAMPLES as EXAMPLE_TABLE
from control.kuberay.manifests import (
    GPU_PRODUCTS,
    IMAGE,
    NothingFits,
    RayServicePlan,
    UnsupportedGPU,
    _main,
    plan_for_runtime,
    rayservice_name,
    render_for_target,
    render_rayservice,
    render_serve_config,
    to_yaml,
)
from serve.endpoint import EndpointConfig

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "cluster_configs" / "kuberay"
SHARED = REPO.parent / "shared" / "reference" / "kuberay"
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def plan(tp: int = 1, pp: int = 1, gpu: str = "h100_sxm", replicas: int = 1, low: int = 1, high: int = 1, **fields) -> RayServicePlan:
    runtime = {"engine": "vllm", "model": "/models/m", "tensor_parallel_size": tp, "pipeline_parallel_size": pp}
    return RayServicePlan(
        name="chat", served_model_name="chat", runtime=runtime, gpu=gpu,
        replicas=replicas, min_replicas=low, max_replicas=high, **fields,
    )  # fmt: skip


def workers(manifest: dict) -> list[dict]:
    return manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]


def container(group: dict) -> dict:
    return group["template"]["spec"]["containers"][0]


@pytest.mark.parametrize(
    ("tp", "pp", "gpu", "per_pod", "pods"),
    [
        (1, 1, "l4", 1, 1),
        (4, 1, "h100_sxm", 4, 1),
        (4, 2, "h100_sxm", 8, 1),  # 8 GPUs fit an 8-GPU node
        (8, 2, "h100_sxm", 8, 2),  # 16 do not: two pods of 8
        (8, 1, "gb200", 4, 2),  # GB200 trays hold 4
    ],
)
def test_gpu_limits_per_pod(tp, pp, gpu, per_pod, pods):
    manifest = admit(render_rayservice(plan(tp, pp, gpu, replicas=2, low=1, high=3)))
    [group] = workers(manifest)
    limits = container(group)["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == str(per_pod)
    assert container(group)["resources"]["requests"]["nvidia.com/gpu"] == str(per_pod)
    assert per_pod * pods == tp * pp
    assert (group["replicas"], group["minReplicas"], group["maxReplicas"]) == (2 * pods, 1 * pods, 3 * pods)
    assert group["template"]["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": GPU_PRODUCTS[gpu]}
    # spare CPUs: one per vLLM worker bundle, the replica's own, and more
    assert int(limits["cpu"]) > per_pod + 1


@pytest.mark.parametrize(("replicas", "low", "high"), [(1, 1, 1), (2, 1, 4), (3, 3, 3), (1, 1, 8)])
def test_worker_replicas_within_bounds_and_autoscaling(replicas, low, high):
    manifest = admit(render_rayservice(plan(2, replicas=replicas, low=low, high=high)))
    [group] = workers(manifest)
    assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    cluster = manifest["spec"]["rayClusterConfig"]
    assert cluster.get("enableInTreeAutoscaling", False) is (low < high)
    runtime = yaml.safe_load(manifest["spec"]["serveConfigV2"])["applications"][0]["args"]["runtime"]
    if low < high:
        assert (runtime["autoscaling"].get("min_replicas", 1), runtime["autoscaling"]["max_replicas"]) == (low, high)
        assert "replicas" not in runtime
    else:
        assert runtime.get("replicas", 1) == replicas and "autoscaling" not in runtime


def test_a_plan_outside_its_bounds_is_refused():
    with pytest.raises(ValidationError, match="min_replicas"):
        plan(replicas=5, low=1, high=4)
    with pytest.raises(ValidationError, match="DNS-1035"):
        RayServicePlan(name="Chat_1", served_model_name="c", runtime={"engine": "vllm", "model": "/m"}, gpu="l4",
                       replicas=1, min_replicas=1, max_replicas=1)  # fmt: skip


def test_gpus_are_not_set_twice():
    manifest = admit(render_rayservice(plan(4, replicas=1, low=1, high=2)))
    cluster = manifest["spec"]["rayClusterConfig"]
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0"
    assert "nvidia.com/gpu" not in container(head)["resources"]["limits"]
    for group in [head, *cluster["workerGroupSpecs"]]:
        assert not group.get("resources"), "GPUs given in rayStartParams; the resources map stays empty"
    [group] = cluster["workerGroupSpecs"]
    assert group["rayStartParams"]["num-gpus"] == container(group)["resources"]["limits"]["nvidia.com/gpu"]
    # the operator's rule, through the shipped admission: both at once is refused
    both = render_rayservice(plan(4, replicas=1, low=1, high=2))
    workers(both)[0]["resources"] = {"GPU": "4"}
    with pytest.raises(ManifestInvalid, match="both"):
        admit(both)


def test_serve_config_runs_the_endpoint():
    manifest = render_rayservice(plan(2, 2, replicas=1, low=1, high=2))
    config = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(config)
    apps = config["applications"]
    assert [(a["name"], a["route_prefix"]) for a in apps] == [("runtime-chat", None), ("gateway", "/v1")]
    for app in apps:
        module, attr = app["import_path"].split(":")
        assert callable(getattr(importlib.import_module(module), attr))
        cfg = EndpointConfig.model_validate(app["args"])
        assert cfg.name == "chat"
        assert (cfg.runtime.engine, cfg.runtime.tensor_parallel_size, cfg.runtime.pipeline_parallel_size) == ("vllm", 2, 2)
        assert cfg.runtime.accelerator_type == "H100"  # GPUs for vLLM's workers before a GPU pod has joined
    [group] = workers(manifest)
    assert '"accelerator_type:H100": 1' in group["rayStartParams"]["resources"].replace("\\", "")
    # the key comes from the Secret, never in the manifest
    env = {e["name"]: e for e in container(group)["env"]}
    assert env["FOUNDRY_ENDPOINT_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "chat-key", "key": "api-key"}
    assert manifest["metadata"]["annotations"]["ray.io/initializing-timeout"] == "1800s"
    assert manifest["spec"]["upgradeStrategy"] == {"type": "NewCluster"}
    assert container(group)["image"] == IMAGE


def test_plan_for_a_chosen_runtime_table():
    """What control.planning chose (its config["runtime"] and config["target"]["gpu"])."""
    runtime = {"engine": "vllm", "model": "/models/llama", "tensor_parallel_size": 2, "max_num_seqs": 32, "replicas": 3}
    manifest = admit(render_rayservice(plan_for_runtime("Llama 3.1 8B", runtime, gpu="l40s", namespace="ml")))
    [group] = workers(manifest)
    assert (group["replicas"], group["minReplicas"], group["maxReplicas"]) == (3, 3, 3)
    assert container(group)["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert manifest["metadata"]["name"] == "llama-3-1-8b" and manifest["metadata"]["namespace"] == "ml"
    args = yaml.safe_load(manifest["spec"]["serveConfigV2"])["applications"][1]["args"]
    assert args["name"] == "Llama 3.1 8B" and args["runtime"]["replicas"] == 3
    scaled = dict(runtime, autoscaling={"min_replicas": 0, "max_replicas": 4, "target_ongoing_requests": 8})
    del scaled["replicas"]
    p = plan_for_runtime("chat", scaled, gpu="NVIDIA-H100-80GB-HBM3")
    assert (p.gpu, p.min_replicas, p.replicas, p.max_replicas, p.target_ongoing_requests) == ("h100_sxm", 1, 1, 4, 8)
    with pytest.raises(UnsupportedGPU):
        plan_for_runtime("chat", runtime, gpu="mi300x")


def test_local_serve_config():
    config = render_serve_config("tiny", {"engine": "cpu", "model": "builtin:foundry-tiny"})
    schema = ServeDeploySchema.model_validate(config)
    assert [a.import_path for a in schema.applications] == ["serve.endpoint:build_runtime", "serve.endpoint:build"]


@pytest.mark.parametrize(
    "model",
    [
        "meta-llama/Llama-3.1-70B-Instruct",
        "org/" + "A-Very-Long_Model.Name-" * 4 + "v2",
        "org/" + "A-Very-Long_Model.Name-" * 4 + "v3",
        "1b.model",
        "///",
    ],
)
def test_names_are_short_valid_and_deterministic(model):
    name = rayservice_name(model)
    assert len(name) <= 47 and DNS1035.match(name), name
    assert rayservice_name(model) == name


def test_long_names_stay_apart():
    a, b = (rayservice_name("org/" + "A-Very-Long_Model.Name-" * 4 + tail) for tail in ("v2", "v3"))
    assert a != b and len(a) == len(b) == 47


def test_unsupported_gpus():
    for gpu in ("mi300x", "cpu", "tpu-v5"):
        with pytest.raises(UnsupportedGPU, match="cannot be targeted"):
            render_for_target("meta-llama/Llama-3.1-8B-Instruct", gpu=gpu, num_gpus=8)


@pytest.mark.slow  # an optimizer search
def test_nothing_fits():
    with pytest.raises(NothingFits) as info:
        render_for_target("meta-llama/Llama-3.1-70B-Instruct", gpu="l4", num_gpus=1)
    assert (info.value.status, info.value.code, info.value.param) == (400, "no_configuration", "num_gpus")
    assert "Llama-3.1-70B-Instruct" in info.value.message


# --- the committed examples --------------------------------------------------------------------


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> dict[str, str]:
    """The examples as the entry point writes them, into a fresh directory (three optimizer
    searches: the tests using them are marked slow)."""
    out = tmp_path_factory.mktemp("examples")
    assert _main(["--examples", str(out)]) == 0
    return {p.name: p.read_text() for p in out.iterdir()}


@pytest.mark.slow
def test_examples_are_what_the_code_writes(generated):
    committed = {p.name: p.read_text() for p in EXAMPLES.glob("*.yaml")}
    assert sorted(committed) == sorted(generated), "run: python -m control.kuberay.manifests --examples cluster_configs/kuberay"
    for name, text in generated.items():
        assert committed[name] == text, f"{name} drifted; run: python -m control.kuberay.manifests --examples cluster_configs/kuberay"


def _rayservices(files: dict[str, str]) -> list[dict]:
    docs = [yaml.safe_load(text) for text in files.values()]
    return [d for d in docs if d.get("kind") == "RayService"]


@pytest.mark.slow
def test_examples_admit(generated):
    services = _rayservices(generated)
    assert len(services) >= 3
    for manifest in services:
        admit(manifest)
        [group] = workers(manifest)
        choice = yaml.safe_load(manifest["metadata"]["annotations"]["foundry.ai/choice"])
        per_pod = int(container(group)["resources"]["limits"]["nvidia.com/gpu"])
        pods_per_replica = group["replicas"] // choice["replicas"]
        assert per_pod * pods_per_replica == choice["tp"] * choice["pp"]
        assert yaml.safe_load(to_yaml(manifest)) == manifest
    local = yaml.safe_load(generated["foundry-tiny.serve.yaml"])
    ServeDeploySchema.model_validate(local)


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "crds").is_dir(), reason=f"{SHARED} is absent (reference data)")
def test_examples_admit_against_the_upstream_crds(generated):
    upstream = Definitions.load(SHARED / "crds")
    for manifest in _rayservices(generated):
        admit(manifest, definitions=upstream)


@pytest.mark.slow
def test_render_for_target_fits_the_gpus(generated):
    for file, model, gpu, num_gpus, _ in EXAMPLE_TABLE:
        manifest = yaml.safe_load(generated[file])
        assert manifest["metadata"]["annotations"]["foundry.ai/model"] == model
        [group] = workers(manifest)
        assert group["template"]["spec"]["nodeSelector"]["nvidia.com/gpu.product"] == GPU_PRODUCTS[gpu]
        per_pod = int(container(group)["resources"]["limits"]["nvidia.com/gpu"])
        assert group["maxReplicas"] * per_pod <= num_gpus
