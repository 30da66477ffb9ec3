"""The vLLM runtime table: keys, errors that name them, engine arguments, placement, and the
optimizer's output loaded as a runtime table. No vLLM, no Ray."""

from __future__ import annotations

from pathlib import Path

import pytest

from control.config import ConfigError, parse_config
from serve.config import (
    CPURuntimeConfig,
    VLLMRuntimeConfig,
    runtime_from_deployment_spec,
    runtime_table_toml,
)
from serve.runtimes.placement import replica_placement
from serve.runtimes.vllm import engine_args

FULL = """
[runtimes.chat]
engine = "vllm"
model = "/models/llama"
tensor_parallel_size = 2
pipeline_parallel_size = 2
max_model_len = 4096
max_num_seqs = 64
max_num_batched_tokens = 8192
dtype = "bfloat16"
quantization = "fp8"
gpu_memory_utilization = 0.85
kv_cache_gib = 8
enforce_eager = false
engine_args = { enable_prefix_caching = true, swap_space = 4 }
num_cpus = 2
accelerator_type = "H100"

[runtimes.chat.autoscaling]
min_replicas = 1
max_replicas = 4
target_ongoing_requests = 32
"""


def load(text: str):
    return parse_config(text, source="f.toml", base_dir=Path("/tmp"))


def test_every_runtime_key_of_the_issue_loads():
    rt = load(FULL).runtimes["chat"]
    assert isinstance(rt, VLLMRuntimeConfig)
    assert (rt.tensor_parallel_size, rt.pipeline_parallel_size, rt.workers) == (2, 2, 4)
    assert rt.autoscaling.max_replicas == 4 and rt.engine_args == {"enable_prefix_caching": True, "swap_space": 4}


def test_engine_defaults_to_cpu():
    rt = load('[runtimes.t]\nmodel = "builtin:foundry-tiny"\n').runtimes["t"]
    assert isinstance(rt, CPURuntimeConfig)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[runtimes.a]\nengine = "vllm"\nmodel = "m"\ntensor_paralel_size = 2\n', "f.toml: runtimes.a.tensor_paralel_size: unknown key"),
        ('[runtimes.a]\nengine = "vllm"\nmodel = "m"\ntorch_threads = 2\n', "runtimes.a.torch_threads: unknown key"),
        ('[runtimes.a]\nengine = "cpu"\nmodel = "m"\nkv_cache_gib = 1\n', "runtimes.a.kv_cache_gib: unknown key"),
        ('[runtimes.a]\nengine = "tpu"\nmodel = "m"\n', "runtimes.a.engine: unknown engine 'tpu' (valid: cpu, vllm)"),
        ('[runtimes.a]\nengine = "vllm"\nmodel = "m"\nengine_args = { max_num_seqs = 3 }\n', "engine_args.max_num_seqs repeats the runtime key max_num_seqs"),
        ('[runtimes.a]\nengine = "vllm"\nmodel = "m"\nengine_args = { kv_cache_memory_bytes = 3 }\n', "repeats the runtime key kv_cache_gib"),
        ('[runtimes.a]\nengine = "vllm"\nmodel = "m"\nreplicas = 2\n[runtimes.a.autoscaling]\nmax_replicas = 3\n', "give replicas or [autoscaling], not both"),
        ('[runtimes.a]\nengine = "vllm"\nmodel = "m"\n[runtimes.a.autoscaling]\nmin_replicas = 3\nmax_replicas = 2\n', "autoscaling.min_replicas (3) exceeds autoscaling.max_replicas (2)"),
        ('[runtimes.a]\nengine = "vllm"\nmodel = "m"\ngpu_memory_utilization = 1.5\n', "runtimes.a.gpu_memory_utilization"),
    ],
)
def test_bad_keys_fail_naming_them(text, expected):
    with pytest.raises(ConfigError) as err:
        load(text)
    assert expected in str(err.value)


def test_engine_args_on_cpu_size_the_kv_cache_and_run_eagerly():
    rt = VLLMRuntimeConfig(engine="vllm", model="/m", max_model_len=512, engine_args={"seed": 3})
    args = engine_args(rt, Path("/m"), model_name="chat", device="cpu")
    assert args["kv_cache_memory_bytes"] == 256 << 20
    assert args["enforce_eager"] is True and args["distributed_executor_backend"] == "mp"
    assert args["max_model_len"] == 512 and args["seed"] == 3 and args["served_model_name"] == "chat"
    assert "gpu_memory_utilization" not in args


def test_engine_args_on_gpu_use_ray_workers_and_the_memory_fraction():
    rt = load(FULL).runtimes["chat"]
    args = engine_args(rt, Path("/models/llama"), model_name="chat", device="gpu")
    assert args["distributed_executor_backend"] == "ray" and args["enforce_eager"] is False
    assert args["gpu_memory_utilization"] == 0.85 and args["kv_cache_memory_bytes"] == 8 << 30
    assert (args["tensor_parallel_size"], args["pipeline_parallel_size"], args["quantization"]) == (2, 2, "fp8")
    assert args["enable_prefix_caching"] is True


def test_gpu_placement_packs_one_node_when_it_fits_and_spreads_otherwise():
    kwargs = dict(tensor_parallel_size=4, pipeline_parallel_size=2, num_cpus=2, accelerator_type="H100", device="gpu")
    one = replica_placement(gpus_per_node=[8, 8], **kwargs)
    assert one.strategy == "STRICT_PACK"
    assert one.bundles[0] == {"CPU": 2}
    assert one.bundles[1:] == [{"GPU": 1, "CPU": 1, "accelerator_type:H100": 0.001}] * 8
    assert replica_placement(gpus_per_node=[4, 4], **kwargs).strategy == "PACK"


def test_cpu_placement_reserves_a_cpu_per_worker_plus_the_replicas_own():
    p = replica_placement(
        tensor_parallel_size=1, pipeline_parallel_size=1, num_cpus=0.5, accelerator_type=None, device="cpu",
        gpus_per_node=[0], cpus_per_node=[2],
    )
    assert p.bundles == [{"CPU": 0.5}, {"CPU": 1}] and p.strategy == "STRICT_PACK"


def test_the_optimizers_deployment_spec_loads_as_a_runtime_table_unedited():
    from tune.search.deploy import deployment_spec
    from tune.search.space import Candidate, Evaluation

    candidate = Candidate(gpu="h100_sxm", tp=2, pp=1, replicas=3, max_num_seqs=128, precision="fp8",
                          max_num_batched_tokens=8192, genes=(0,))
    evaluation = Evaluation(candidate=candidate, feasible=True, reason="", batch_per_replica=64, ttft_ms=100,
                            tpot_ms=20, e2e_ms=2000, output_tps_per_gpu=1000, output_tps_total=6000,
                            cost_per_million_tokens_usd=0.5, gpus_used=6, violation=0, max_concurrency_per_replica=128)
    spec = deployment_spec("/models/llama-3.1-8b", evaluation, isl=1000, osl=200)
    for bundle in spec["ray_serve"]["placement_group_bundles"]:  # as with pin_accelerator=True
        bundle["accelerator_type:H100"] = 0.001
    runtime = runtime_from_deployment_spec(spec)
    assert (runtime.model, runtime.tensor_parallel_size, runtime.replicas) == ("/models/llama-3.1-8b", 2, 3)
    assert (runtime.max_num_seqs, runtime.max_model_len, runtime.quantization) == (128, 1280, "fp8")
    assert runtime.engine_args == {"enable_chunked_prefill": True} and runtime.accelerator_type == "H100"

    text = runtime_table_toml("llama", runtime) + '\n[models.llama.providers.local]\ntype = "local"\n'
    assert load(text).runtimes["llama"] == runtime

    placement = replica_placement(
        tensor_parallel_size=runtime.tensor_parallel_size, pipeline_parallel_size=runtime.pipeline_parallel_size,
        num_cpus=runtime.num_cpus, accelerator_type=runtime.accelerator_type, device="gpu", gpus_per_node=[8],
    )
    assert placement.bundles[1:] == spec["ray_serve"]["placement_group_bundles"]
    assert placement.strategy == spec["ray_serve"]["placement_group_strategy"]


def test_a_spec_whose_bundles_disagree_with_tp_x_pp_is_refused():
    spec = {"vllm": {"model": "/m", "tensor_parallel_size": 2}, "ray_serve": {"placement_group_bundles": [{"GPU": 1}]}}
    with pytest.raises(ValueError, match="1 GPU bundles but tensor_parallel_size x pipeline_parallel_size is 2"):
        runtime_from_deployment_spec(spec)
