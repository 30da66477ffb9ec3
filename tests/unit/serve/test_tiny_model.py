"""The built-in tiny model: reproducible bytes, safe concurrent builds, usable tokenizer, and the
model-spec resolution every runtime goes through."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from transformers import AutoConfig, AutoTokenizer

from serve.runtimes.tiny import UnknownModel, ensure_tiny_model, minilm_path, resolve_model


def file_bytes(model_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(model_dir.iterdir())}


def test_two_builds_are_byte_identical(tiny_model_dir: Path, tmp_path: Path) -> None:
    rebuilt = ensure_tiny_model(tmp_path)
    assert rebuilt == tmp_path / "models" / "foundry-tiny"
    assert file_bytes(rebuilt) == file_bytes(tiny_model_dir)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(file_bytes(rebuilt))


def test_an_existing_model_is_reused(tiny_model_dir: Path) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in tiny_model_dir.iterdir()}
    assert ensure_tiny_model(tiny_model_dir.parent.parent) == tiny_model_dir
    assert {p.name: p.stat().st_mtime_ns for p in tiny_model_dir.iterdir()} == before


def test_racing_builds_leave_one_complete_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    results: list[Path] = []
    errors: list[BaseException] = []

    def build() -> None:
        try:
            results.append(ensure_tiny_model(tmp_path))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert results == [tmp_path / "models" / "foundry-tiny"] * 2
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["foundry-tiny"]  # no staging leftovers
    assert file_bytes(results[0]) == file_bytes(tiny_model_dir)


def test_the_model_is_a_small_llama_with_a_matching_tokenizer(tiny_model_dir: Path) -> None:
    config = AutoConfig.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert config.model_type == "llama"
    assert (config.hidden_size, config.num_hidden_layers, config.num_key_value_heads) == (256, 4, 2)
    assert config.vocab_size == len(tokenizer) == 2048
    assert (tokenizer.bos_token, tokenizer.eos_token) == ("<|begin|>", "<|end|>")
    assert config.eos_token_id == tokenizer.eos_token_id
    for special in ("<|begin|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"):
        assert len(tokenizer.encode(special, add_special_tokens=False)) == 1
    text = "Hello, world! Grüße, ¿qué tal? 123 😀"
    assert tokenizer.decode(tokenizer.encode(text)) == text  # byte-level: nothing is unknown


def test_builtin_specs_resolve(tiny_model_dir: Path) -> None:
    home = tiny_model_dir.parent.parent
    assert resolve_model("builtin:foundry-tiny", home) == tiny_model_dir
    assert resolve_model("builtin:all-minilm-l6-v2", home) == minilm_path()
    assert (minilm_path() / "config.json").is_file()
    assert resolve_model(str(tiny_model_dir), Path("/nonexistent")) == tiny_model_dir


def test_bad_specs_name_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(UnknownModel, match="builtin:nope"):
        resolve_model("builtin:nope", tmp_path)
    with pytest.raises(UnknownModel, match="does not exist") as missing:
        resolve_model(str(tmp_path / "missing"), tmp_path)
    assert str(tmp_path / "missing") in str(missing.value)
    with pytest.raises(UnknownModel, match="no config.json") as empty:
        resolve_model(str(tmp_path), tmp_path)
    assert str(tmp_path) in str(empty.value)
