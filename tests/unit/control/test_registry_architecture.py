"""The registry reads a model's config.json into the optimizer's architecture description, and
says what a model directory lacks."""

from __future__ import annotations

import doctest
import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.numpy import save_file

import control.registry
from control.errors import InvalidRequest
from control.registry import SOURCE_PATTERN, architecture_of, missing_files, source_error, to_architecture
from serve.runtimes.tiny import ensure_tiny_model
from tune.catalog.architectures import from_config, resolve_model

# A Llama-shaped model small enough to count by hand (see test_a_local_directory_...).
DENSE = {
    "model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
    "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 256, "max_position_embeddings": 4096,
    "torch_dtype": "float16", "tie_word_embeddings": False,
}  # fmt: skip
MOE = {
    "model_type": "mixtral", "num_hidden_layers": 3, "hidden_size": 64, "num_attention_heads": 8,
    "num_key_value_heads": 2, "intermediate_size": 96, "vocab_size": 512, "max_position_embeddings": 32768,
    "num_local_experts": 4, "num_experts_per_tok": 2, "dtype": "bfloat16",
}  # fmt: skip


def model_dir(root: Path, config: dict, *, tokenizer: str | None = "tokenizer.json", weights: bool = True) -> Path:
    """A model directory as Hugging Face writes one: config.json, a tokenizer, safetensors weights."""
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps(config))
    if tokenizer is not None:
        tokenizer_json = {"version": "1.0", "model": {"type": "BPE", "vocab": {}, "merges": []}}
        (root / tokenizer).write_text(json.dumps(tokenizer_json))
    if weights:
        save_file({"model.embed_tokens.weight": np.zeros((config["vocab_size"], config["hidden_size"]), np.float16)},
                  str(root / "model.safetensors"))  # fmt: skip
    return root


def test_a_local_directory_is_read_into_the_architecture(tmp_path: Path) -> None:
    arch = architecture_of(model_dir(tmp_path / "my-llama", DENSE))
    assert arch["name"] == "my-llama"
    assert (arch["num_layers"], arch["hidden_size"], arch["num_heads"], arch["num_kv_heads"], arch["head_dim"]) == (
        2, 64, 4, 2, 16)
    assert (arch["num_experts"], arch["dtype"], arch["context_length"]) == (0, "float16", 4096)
    # per layer: q and o 64x64 each, k and v 64x(2x16) each, a gated MLP 3x64x128; embeddings and an untied head
    per_layer = 2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128
    assert arch["parameters"] == arch["active_parameters"] == 2 * per_layer + 2 * 256 * 64
    assert to_architecture(arch) == from_config(DENSE, name="my-llama")
    json.dumps(arch)  # stored as a JSON column


def test_an_moe_config_keeps_its_experts(tmp_path: Path) -> None:
    arch = architecture_of(model_dir(tmp_path / "moe", MOE), name="tiny-moe")
    assert (arch["name"], arch["num_experts"], arch["num_experts_per_token"]) == ("tiny-moe", 4, 2)
    assert arch["moe_intermediate_size"] == 96 and arch["dtype"] == "bfloat16"
    assert arch["active_parameters"] < arch["parameters"]  # 2 of 4 experts per token
    assert to_architecture(arch).num_moe_layers == 3


def test_the_builtin_model_is_built_under_the_home_and_read(tmp_path: Path) -> None:
    arch = architecture_of("builtin:foundry-tiny", home=tmp_path)
    directory = tmp_path / "models" / "foundry-tiny"
    assert missing_files(directory) == []
    config = json.loads((directory / "config.json").read_text())
    assert arch["name"] == "foundry-tiny" and arch["dtype"] == config["dtype"]
    read = (arch["num_layers"], arch["hidden_size"], arch["num_heads"], arch["num_kv_heads"])
    assert read == tuple(config[k] for k in ("num_hidden_layers", "hidden_size", "num_attention_heads",
                                             "num_key_value_heads"))  # fmt: skip
    assert arch["context_length"] == config["max_position_embeddings"]
    # the count matches the weights actually written (RMSNorm vectors aside, which the physics ignores)
    with safe_open(str(directory / "model.safetensors"), framework="numpy") as weights:
        shapes = {k: weights.get_slice(k).get_shape() for k in weights.keys()}
    counted = sum(int(np.prod(s)) for k, s in shapes.items() if not k.endswith("norm.weight"))
    assert arch["parameters"] == counted
    assert architecture_of(directory)["parameters"] == counted  # the same directory by path
    assert ensure_tiny_model(tmp_path) == directory  # built once


def test_a_catalog_id_with_or_without_a_provider_type() -> None:
    llama = architecture_of("together:meta-llama/Llama-3.1-8B-Instruct")
    assert llama == architecture_of("meta-llama/Llama-3.1-8B-Instruct")
    assert to_architecture(llama) == resolve_model("meta-llama/Llama-3.1-8B-Instruct")
    with pytest.raises(InvalidRequest) as unknown:
        architecture_of("openai:gpt-4o-mini")
    assert unknown.value.param == "source" and "gpt-4o-mini" in unknown.value.message


def test_missing_files_are_named(tmp_path: Path) -> None:
    assert missing_files(model_dir(tmp_path / "ok", DENSE)) == []
    bare = model_dir(tmp_path / "bare", DENSE, tokenizer=None, weights=False)
    missing = missing_files(bare)
    assert len(missing) == 2 and missing[0].startswith("a tokenizer (") and missing[1].startswith("weights (")
    (tmp_path / "empty").mkdir()
    assert missing_files(tmp_path / "empty")[0] == "config.json"

    bpe = model_dir(tmp_path / "bpe", DENSE, tokenizer="vocab.json")
    assert missing_files(bpe) == ["merges.txt (next to vocab.json)"]
    (bpe / "merges.txt").write_text("#version: 0.2\n")
    assert missing_files(bpe) == []

    sharded = model_dir(tmp_path / "sharded", DENSE, weights=False)
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    (sharded / "model-00001-of-00002.safetensors").write_bytes(b"")
    assert missing_files(sharded) == ["model-00002-of-00002.safetensors (named in the weight index)"]


def test_a_config_the_optimizer_cannot_read_is_a_400(tmp_path: Path) -> None:
    broken = model_dir(tmp_path / "broken", {"model_type": "llama", "vocab_size": 8, "hidden_size": 4})
    with pytest.raises(InvalidRequest) as error:
        architecture_of(broken)
    assert error.value.param == "source" and "num_hidden_layers" in error.value.message
    (broken / "config.json").write_text("[1, 2]")
    with pytest.raises(InvalidRequest, match="JSON object"):
        architecture_of(broken)
    with pytest.raises(InvalidRequest, match="unknown built-in model"):
        architecture_of("builtin:gpt-5", home=tmp_path)


def test_docstring_examples() -> None:
    result = doctest.testmod(control.registry)
    assert result.attempted > 0 and result.failed == 0


@settings(max_examples=400, derandomize=True, database=None)
@given(st.one_of(
    st.text(),
    st.from_regex(SOURCE_PATTERN, fullmatch=True),
    st.builds(str.__add__, st.sampled_from(["/", "/m/", "/.", "builtin:", "openai:", "ollama:", "local:"]), st.text()),
))  # fmt: skip
def test_the_documented_source_pattern_is_what_the_registry_accepts(source: str) -> None:
    """The API documents SOURCE_PATTERN; the registry refuses exactly what it refuses, with a reason."""
    documented = re.fullmatch(SOURCE_PATTERN, source) is not None and len(source) <= 1024
    assert documented == (source_error(source) is None), source_error(source)


def test_sources_refused_with_their_reason() -> None:
    assert source_error("ollama:llama3") == (
        "unknown provider type 'ollama' in source; known: builtin, local, openai, together, azure, anthropic, "
        "or an absolute path to a model directory", "unknown_provider_type")
    assert "absolute path" in source_error("models/llama")[0] and "absolute path" in source_error("~/llama")[0]
    assert "start with a letter or digit" in source_error("/models/..")[0]
    assert "the model id after 'openai:'" in source_error("openai:gpt 4o")[0]
    for good in ("/models/Llama 3", "builtin:foundry-tiny", "together:meta-llama/Llama-3.3-70B-Instruct-Turbo"):
        assert source_error(good) is None
