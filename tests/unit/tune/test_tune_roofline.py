"""Roofline physics on worked examples, and the memory fit."""

from __future__ import annotations

import pandas as pd
import pytest

from tune.predict.estimate import estimate
from tune.predict.roofline import roofline
from tune.predict.workload import resolve

LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"


def test_worked_example_llama3_8b_on_one_h100():
    # The example: 16 GB of bf16 weights from 3.35 TB/s is about 4.8 ms per token.
    # Decode reads every weight but the input embedding (a lookup of one row): 15.0 GB.
    e = estimate(LLAMA_8B, "h100_sxm", isl=1024, osl=256)
    assert e.tpot_ms == pytest.approx(4.8, rel=0.08)
    assert e.decode_weight_ms == pytest.approx(15.01e9 / 3.35e12 * 1e3, rel=0.01)
    assert e.decode_kv_ms < 0.02 * e.tpot_ms  # one 1.1k-token sequence: 150 MB of KV
    # prefill is compute-bound: 2 * 8.0e9 params * 1024 tokens / 989 TFLOP/s ~ 16 ms
    assert e.ttft_ms == pytest.approx(16.0, rel=0.1)
    assert e.weights_per_gpu_gb == pytest.approx(16.06, rel=0.01)


def test_tensor_parallelism_splits_weights_but_pays_all_reduces():
    one = estimate(LLAMA_8B, "h100_sxm", isl=1024, osl=256, tp=1)
    four = estimate(LLAMA_8B, "h100_sxm", isl=1024, osl=256, tp=4)
    assert four.decode_weight_ms == pytest.approx(one.decode_weight_ms / 4, rel=0.01)
    assert four.decode_comm_ms > 0 == one.decode_comm_ms
    assert four.tpot_ms < one.tpot_ms


def test_kv_reads_grow_with_batch_and_context():
    small = estimate(LLAMA_8B, "h100_sxm", isl=1024, osl=256, batch_size=8)
    batch = estimate(LLAMA_8B, "h100_sxm", isl=1024, osl=256, batch_size=64)
    context = estimate(LLAMA_8B, "h100_sxm", isl=8192, osl=256, batch_size=8)
    assert batch.decode_kv_ms == pytest.approx(8 * small.decode_kv_ms, rel=1e-6)
    assert context.decode_kv_ms > 6 * small.decode_kv_ms
    assert batch.tpot_ms > small.tpot_ms


def test_moe_decode_reads_only_the_routed_experts():
    one = estimate("deepseek-ai/DeepSeek-R1", "h200_sxm", isl=1024, osl=1024, tp=8)
    many = estimate("deepseek-ai/DeepSeek-R1", "h200_sxm", isl=1024, osl=1024, tp=8, batch_size=256)
    # batch 1 touches 8 of 256 experts per layer: ~37B active of 671B params in fp8
    weights_read_gb = one.decode_weight_ms * 1e-3 * 4.8e12 / 1e9 * 8
    assert 30 < weights_read_gb < 50
    assert many.decode_weight_ms > 10 * one.decode_weight_ms  # a big batch touches them all


def test_memory_fit_gives_the_maximum_concurrency():
    assert not estimate("meta-llama/Llama-3.1-70B", "h100_sxm", isl=1024, osl=256).fits
    tp4 = estimate("meta-llama/Llama-3.1-70B", "h100_sxm", isl=1024, osl=256, tp=4)
    assert tp4.fits and tp4.max_concurrency > 100
    fp8 = estimate("meta-llama/Llama-3.1-70B", "h100_sxm", isl=1024, osl=256, tp=4, precision="fp8")
    assert fp8.max_concurrency > tp4.max_concurrency  # halved weights leave room for KV
    # KV of (isl + osl) tokens per sequence decides the count
    long = estimate("meta-llama/Llama-3.1-70B", "h100_sxm", isl=8192, osl=256, tp=4)
    assert long.max_concurrency < tp4.max_concurrency / 5


def test_queued_prefill_scales_with_batch_and_vectorised_rows_agree():
    rows = pd.DataFrame({
        "model_path": [LLAMA_8B, LLAMA_8B], "system": ["h100_sxm", "h100_sxm"],
        "isl": [2048, 2048], "osl": [128, 128], "batch_size": [1, 16], "tp_size": [1, 1],
    })
    _, physics = resolve(rows)
    r = roofline(physics)
    assert r.ttft_queued_ms[1] == pytest.approx(16 * r.ttft_queued_ms[0], rel=0.05)
    assert r.ttft_ms[0] == pytest.approx(
        estimate(LLAMA_8B, "h100_sxm", isl=2048, osl=128).ttft_ms)
    assert 0 < r.prefill_load[0] < r.prefill_load[1] < 1
