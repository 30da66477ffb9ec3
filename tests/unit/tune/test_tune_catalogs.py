"""Hardware, model and precision catalogs: coverage, datasheet units, config.json parsing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tune.catalog.architectures import CATALOG, load_config_json, resolve_model
from tune.errors import InvalidInput, InvalidModelConfig, UnknownGPU, UnknownModel
from tune.catalog.hardware import GPUS, get_gpu
from tune.catalog.precision import kv_cache_bytes, resolve_formats

MEASURED_MODELS = [  # every model_path of ../shared/perfdata/measured_serving.csv
    "MiniMaxAI/MiniMax-M2.5", "deepseek-ai/DeepSeek-R1", "openai/gpt-oss-120b",
    "Qwen/Qwen3.5-397B-A17B", "meta-llama/Llama-3.1-70B", "deepseek-ai/DeepSeek-V3",
    "meta-llama/Llama-3.1-8B-Instruct", "Qwen/Qwen3-235B-A22B-FP8", "moonshotai/Kimi-K2.5",
    "zhipuai/GLM-5", "nvidia/Llama-3.1-8B-Instruct-FP8", "nvidia/DeepSeek-R1-NVFP4",
    "nvidia/Qwen3-32B-NVFP4", "nvidia/DeepSeek-V3.1-NVFP4",
]


def test_gpu_catalog_has_every_system_the_issue_names():
    names = {"h100_sxm", "h200_sxm", "b200_sxm", "b300_sxm", "gb200", "gb300",
             "a100_sxm_40gb", "a100_sxm_80gb", "l40s", "l4", "a10g", "mi300x"}
    assert names <= set(GPUS)


def test_gpu_figures_are_dense_datasheet_values():
    h100 = get_gpu("H100-SXM")  # case and dash insensitive
    assert (h100.bf16_dense_tflops, h100.fp8_dense_tflops) == (989.0, 1979.0)
    assert h100.hbm_bandwidth_gbs == 3350.0 and h100.memory_gb == 80.0
    assert get_gpu("b200_sxm").fp4_dense_tflops == 9000.0
    # fp4 weights on Hopper compute in fp8; no fp8 on A100 falls back to bf16
    assert h100.tflops("fp4") == 1979.0
    assert get_gpu("a100_sxm_80gb").tflops("fp8") == 312.0
    assert get_gpu("gb200").nvlink_domain_gpus == 72


def test_gpu_price_is_overridable_and_unknown_gpu_names_the_known_ones():
    assert get_gpu("l4").with_price(0.1).price_per_hour_usd == 0.1
    with pytest.raises(UnknownGPU, match="h100_sxm"):
        get_gpu("tpu_v5")


@pytest.mark.parametrize("model", MEASURED_MODELS)
def test_catalog_covers_the_measured_models(model: str):
    assert resolve_model(model).num_layers > 0


@pytest.mark.parametrize(
    ("model", "total_b", "active_b"),
    [
        ("meta-llama/Llama-3.1-8B-Instruct", 8.03, 8.03),
        ("meta-llama/Llama-3.1-70B-Instruct", 70.6, 70.6),
        ("meta-llama/Llama-3.1-405B", 405.9, 405.9),
        ("deepseek-ai/DeepSeek-R1", 671.0, 37.5),
        ("Qwen/Qwen3-235B-A22B", 235.1, 22.2),
        ("Qwen/Qwen3-30B-A3B", 30.5, 3.35),
        ("Qwen/Qwen2.5-72B-Instruct", 72.7, 72.7),
        ("mistralai/Mixtral-8x7B-Instruct-v0.1", 46.7, 12.9),
        ("openai/gpt-oss-120b", 116.8, 5.7),
        ("moonshotai/Kimi-K2.5", 1026.0, 32.9),
        ("google/gemma-2-27b-it", 27.2, 27.2),
        ("microsoft/phi-4", 14.7, 14.7),
    ],
)
def test_derived_parameter_counts_match_model_cards(model: str, total_b: float, active_b: float):
    arch = resolve_model(model)
    assert arch.total_params / 1e9 == pytest.approx(total_b, rel=0.01)
    assert arch.active_params / 1e9 == pytest.approx(active_b, rel=0.02)


def test_catalog_spans_the_popular_families():
    families = {a.family for a in CATALOG.values()}
    for family in ("llama", "qwen2", "qwen3", "qwen3_moe", "mistral", "mixtral", "gemma2",
                   "gemma3", "phi3", "gpt_oss", "deepseek_v3"):
        assert family in families


def test_kv_bytes_per_token_gqa_mla_and_hybrid():
    assert resolve_model("meta-llama/Llama-3.1-8B").kv_bytes_per_token(2.0) == 32 * 2 * 8 * 128 * 2
    # MLA caches the 512-wide latent plus the 64-wide rope key per layer
    assert resolve_model("deepseek-ai/DeepSeek-V3").kv_bytes_per_token(1.0) == 61 * 576
    # Qwen3.5: only the 15 gated-attention layers grow with context
    q35 = resolve_model("Qwen/Qwen3.5-397B-A17B")
    assert q35.num_full_layers == 15 and q35.linear_state_elements > 0


def _llama_config(**overrides: object) -> dict:
    config = {
        "model_type": "llama", "num_hidden_layers": 32, "hidden_size": 4096,
        "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
        "vocab_size": 128256, "torch_dtype": "bfloat16", "max_position_embeddings": 131072,
    }
    return config | overrides


def test_config_json_file_or_directory(tmp_path: Path):
    (tmp_path / "config.json").write_text(json.dumps(_llama_config()))
    from_dir = resolve_model(str(tmp_path))
    from_file = load_config_json(tmp_path / "config.json")
    assert from_dir.total_params == from_file.total_params == resolve_model("meta-llama/Llama-3.1-8B").total_params
    assert from_dir.head_dim == 128


def test_config_json_moe_mla_and_quantisation(tmp_path: Path):
    deepseek = {
        "model_type": "deepseek_v3", "num_hidden_layers": 61, "hidden_size": 7168,
        "num_attention_heads": 128, "num_key_value_heads": 128, "intermediate_size": 18432,
        "moe_intermediate_size": 2048, "n_routed_experts": 256, "n_shared_experts": 1,
        "num_experts_per_tok": 8, "first_k_dense_replace": 3, "q_lora_rank": 1536,
        "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
        "vocab_size": 129280,
        "quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]},
    }
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(deepseek))
    arch = load_config_json(path)
    assert arch.uses_mla and arch.native_precision == "fp8_block"
    assert arch.total_params == resolve_model("deepseek-ai/DeepSeek-V3").total_params
    gpt_oss = {
        "model_type": "gpt_oss", "num_hidden_layers": 24, "hidden_size": 2880,
        "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 64,
        "intermediate_size": 2880, "num_local_experts": 32, "num_experts_per_tok": 4,
        "vocab_size": 201088, "sliding_window": 128,
        "layer_types": ["sliding_attention", "full_attention"] * 12,
        "quantization_config": {"quant_method": "mxfp4",
                                "modules_to_not_convert": ["model.layers.*.self_attn"]},
    }
    path.write_text(json.dumps(gpt_oss))
    arch = load_config_json(path)
    assert (arch.native_precision, arch.native_moe) == ("bf16", "mxfp4")
    assert arch.num_sliding_layers == 12
    assert arch.total_params == resolve_model("openai/gpt-oss-20b").total_params


def test_bad_config_and_unknown_model_are_typed_errors(tmp_path: Path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(InvalidModelConfig, match="num_hidden_layers"):
        load_config_json(path)
    path.write_text(json.dumps(_llama_config(num_key_value_heads=5)))
    with pytest.raises(InvalidModelConfig, match="multiple of num_kv_heads"):
        load_config_json(path)
    with pytest.raises(UnknownModel, match="no-such/model"):
        resolve_model("no-such/model")
    # paths the file system cannot look up are unknown models too, not crashes (found by fuzzing /predict)
    for text in ("~no-such-user-0/config.json", "é" * 200, "a\x00b"):
        with pytest.raises(UnknownModel):
            resolve_model(text)


def test_precision_resolution():
    gemm, moe = resolve_formats("", "", "", native="bf16", native_moe="mxfp4")
    assert (gemm.name, moe.name) == ("bf16", "mxfp4")
    gemm, moe = resolve_formats("fp8", "fp8", "fp8_block", native="bf16")
    assert (gemm.compute, moe.name) == ("fp8", "fp8_block")
    gemm, moe = resolve_formats("fp4", None, None, native="bf16")
    assert gemm.weight_bytes == moe.weight_bytes == pytest.approx(0.5625)
    assert resolve_formats("int4", "", "", native="bf16")[0].compute == "bf16"  # weight-only
    assert kv_cache_bytes("auto") == 2.0 and kv_cache_bytes("fp8_e4m3") == 1.0
    with pytest.raises(InvalidInput, match="unknown precision"):
        resolve_formats("fp3", "", "", native="bf16")


def test_cli_lists_the_catalogs():
    import typer
    from typer.testing import CliRunner

    from tune.cli import register

    app = typer.Typer()
    register(app)
    models = CliRunner().invoke(app, ["tune", "models"], env={"COLUMNS": "200"})
    assert models.exit_code == 0 and "deepseek-ai/DeepSeek-R1" in models.output
    gpus = CliRunner().invoke(app, ["tune", "gpus"], env={"COLUMNS": "200"})
    assert gpus.exit_code == 0 and "mi300x" in gpus.output
