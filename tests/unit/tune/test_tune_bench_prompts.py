"""Prompts of exact token length (with a tokenizer) or approximate (without), and bench rows."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from tune.bench import BenchConfig, LevelResult, PromptFactory, RequestRecord, bench_rows, write_rows
from tune.errors import InvalidInput
from tune.predict.schema import MEASURED_COLUMNS


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small byte-level BPE tokenizer trained here (no hub download)."""
    from tune.bench import _WORDS

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = __import__("tokenizers").decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([" ".join(_WORDS)] * 20 + ["0123456789"] * 5, trainer)
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return path


@pytest.mark.parametrize("isl", [1, 17, 128, 1000])
def test_prompts_have_exactly_isl_tokens_with_a_tokenizer(tokenizer_file: Path, isl: int):
    factory = PromptFactory(tokenizer_file.parent, seed=0)
    prompts = [factory.make(isl, i) for i in range(5)]
    assert factory.exact and all(factory.count(p) == isl for p in prompts)
    assert len(set(prompts)) == 5


def test_prompts_without_a_tokenizer_are_isl_words():
    factory = PromptFactory(None, seed=0)
    prompt = factory.make(64, 7)
    assert not factory.exact and len(prompt.split()) == 64 and prompt.startswith("7 ")


def test_bad_tokenizer_and_bad_config_are_typed_errors(tmp_path: Path):
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(InvalidInput, match="tokenizer"):
        PromptFactory(tmp_path)
    with pytest.raises(InvalidInput):
        BenchConfig(base_url="http://x", model="m", isl=0, osl=1, concurrency=(1,), requests=1)


def test_rows_follow_the_measured_schema(tmp_path: Path):
    config = BenchConfig(base_url="http://x/v1", model="tiny", isl=32, osl=8, concurrency=(2,),
                         requests=2, system="h100_sxm", model_path="Qwen/Qwen3-8B")
    records = [RequestRecord(ttft_ms=10.0, e2e_ms=45.0, itl_ms=[5.0] * 7, output_tokens=8),
               RequestRecord(ttft_ms=20.0, e2e_ms=55.0, itl_ms=[5.0] * 7, output_tokens=8),
               RequestRecord(error="HTTP 500")]
    (row,) = bench_rows(config, [LevelResult(2, records, duration_s=0.1)])
    assert row["backend"] == "foundry" and row["model_path"] == "Qwen/Qwen3-8B"
    assert row["silicon_ttft_ms"] == 15.0 and row["silicon_tpot_ms"] == 5.0
    assert row["requests_ok"] == 2 and row["requests_failed"] == 1 and row["output_tps"] == 160.0
    path = write_rows([row], tmp_path / "bench.csv")
    write_rows([row], path)  # appends without a second header
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and lines[0].split(",")[: len(MEASURED_COLUMNS)] == MEASURED_COLUMNS
