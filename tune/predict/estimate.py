"""Roofline figures of one deployment: the scalar front door of :mod:`tune.predict.roofline`.

The roofline works on arrays of :class:`~tune.predict.roofline.Physics`; this module prices one
row through :mod:`tune.predict.workload` (which sits above the roofline, so the roofline never
imports it back).

Example (the issue's worked example: Llama-3-8B in bf16 on one H100 at batch 1 reads ~15 GB of
weights per token from 3.35 TB/s HBM):
    >>> from tune.predict.estimate import estimate
    >>> e = estimate("meta-llama/Llama-3.1-8B-Instruct", "h100_sxm", isl=1024, osl=256)
    >>> 4.3 < e.tpot_ms < 5.0
    True
"""

from __future__ import annotations

from dataclasses import dataclass

from tune.predict.roofline import roofline
from tune.predict.workload import physics_from_frame

__all__ = ["Estimate", "estimate"]


@dataclass(frozen=True)
class Estimate:
    """Roofline figures of one deployment."""

    ttft_ms: float
    ttft_queued_ms: float
    tpot_ms: float
    decode_weight_ms: float
    decode_kv_ms: float
    decode_compute_ms: float
    decode_comm_ms: float
    weights_per_gpu_gb: float
    kv_per_sequence_per_gpu_gb: float
    max_concurrency: int
    fits: bool


def estimate(
    model: str,
    gpu: str,
    *,
    isl: int,
    osl: int,
    batch_size: int = 1,
    tp: int = 1,
    pp: int = 1,
    attention_dp: int = 1,
    precision: str = "",
    kv_cache_dtype: str = "auto",
) -> Estimate:
    """Roofline figures of one deployment (catalog ids or a config.json path for ``model``)."""
    import pandas as pd

    row = pd.DataFrame([{
        "model_path": model, "system": gpu, "isl": isl, "osl": osl, "batch_size": batch_size,
        "tp_size": tp, "pp_size": pp, "attention_dp_size": attention_dp, "precision": precision,
        "kv_cache_dtype": kv_cache_dtype,
    }])
    r = roofline(physics_from_frame(row))
    return Estimate(
        ttft_ms=float(r.ttft_ms[0]),
        ttft_queued_ms=float(r.ttft_queued_ms[0]),
        tpot_ms=float(r.tpot_ms[0]),
        decode_weight_ms=float(r.decode_weight_ms[0]),
        decode_kv_ms=float(r.decode_kv_ms[0]),
        decode_compute_ms=float(r.decode_compute_ms[0]),
        decode_comm_ms=float(r.decode_comm_ms[0]),
        weights_per_gpu_gb=float(r.weights_per_gpu_gb[0]),
        kv_per_sequence_per_gpu_gb=float(r.kv_per_sequence_per_gpu_gb[0]),
        max_concurrency=int(r.max_concurrency[0]),
        fits=bool(r.max_concurrency[0] >= batch_size),
    )
