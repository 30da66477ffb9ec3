"""Features of the learned predictor: roofline times and utilisation ratios, never identities.

The regressors see no model name and no GPU name, only physics: the roofline's time components
(log ms), how they compare (KV share of decode traffic, arithmetic intensity, communication
share, memory pressure), the shape of the model (MoE sparsity, MLA, hybrid attention), the
deployment (batch, lengths, parallelism, precision) and the serving engine. That is what lets a
model trained on some models and GPUs carry over to others: it learns how far real engines sit
from the roofline as a function of the regime they run in.

Example:
    >>> import pandas as pd
    >>> from tune.predict.features import build_features
    >>> feats = build_features(pd.DataFrame([{"model_path": "Qwen/Qwen3-8B", "system": "h100_sxm",
    ...     "isl": 1024, "osl": 128, "batch_size": 8, "tp_size": 1}]))
    >>> feats.roofline.tpot_ms.shape, feats.matrix.shape[1] == len(FEATURE_NAMES)
    ((1,), True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tune.predict.roofline import Physics, Roofline, roofline
from tune.predict.workload import resolve

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["BACKENDS", "FEATURE_NAMES", "Features", "build_features"]

BACKENDS = ("vllm", "sglang", "trtllm")

FEATURE_NAMES = [
    # roofline times, log10 ms
    "log_tpot_roof", "log_tpot_mixed_roof", "log_decode_weight", "log_decode_kv",
    "log_decode_compute", "log_decode_comm", "log_ttft_roof", "log_ttft_queued_roof",
    "log_prefill_compute", "log_prefill_weight", "log_prefill_comm",
    # utilisation ratios
    "kv_share", "decode_intensity", "decode_comm_share", "mixed_share", "prefill_comm_share",
    "queue_ratio", "prefill_load", "memory_pressure", "weight_memory_share",
    # deployment
    "log_batch", "log_isl", "log_osl", "log_tp", "pp", "log_attention_dp", "log_moe_ep",
    "log_gpus", "log_batch_per_gpu", "log_tokens_in_flight",
    # model shape
    "is_moe", "is_mla", "log_active_params", "sparsity", "expert_fraction", "linear_fraction",
    "sliding_fraction", "log_kv_bytes_per_token",
    # numerics and machine balance
    "gemm_bytes", "expert_bytes_per_param", "log_machine_balance",
    # engine
    *(f"backend_{b}" for b in BACKENDS), "backend_release", "backend_prerelease",
]


@dataclass(frozen=True)
class Features:
    """The feature matrix (rows x :data:`FEATURE_NAMES`) with what it was computed from."""

    frame: pd.DataFrame  # the normalised input rows
    physics: Physics
    roofline: Roofline
    matrix: np.ndarray


def _log(x: np.ndarray) -> np.ndarray:
    return np.log10(np.maximum(x, 1e-6))


def _versions(versions: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(major.minor as a number, 1.0 for rc/dev/nightly builds); NaN where unknown."""
    import pandas as pd

    codes, uniques = pd.factorize(versions.astype(str), sort=False)  # a few distinct versions
    text = pd.Series(uniques, dtype=object).str.strip().str.lower()
    parts = text.str.extract(r"^(\d+)\.(\d+)")
    release = parts[0].astype(float) + parts[1].astype(float) / 100.0
    pre = text.str.contains(r"rc|dev|nightly|post|[a-z]", regex=True).astype(float)
    pre = pre.where(text != "", np.nan)
    return release.to_numpy(dtype=float)[codes], pre.to_numpy(dtype=float)[codes]


def build_features(frame: pd.DataFrame, *, gpus: dict | None = None) -> Features:
    """Normalise rows, price their physics and build the feature matrix in one vectorised pass."""
    frame, p = resolve(frame, gpus=gpus)
    r = roofline(p)
    eps = 1e-9
    decode_memory = r.decode_weight_ms + r.decode_kv_ms
    gpus_n = r.gpus
    active = p.dense_matmul_params + p.experts_per_token * p.expert_params * p.moe_layers
    total = p.dense_matmul_params + p.num_experts * p.expert_params * p.moe_layers
    kv_token = p.kv_elements_layer_token * p.kv_bytes * np.maximum(p.full_layers, 1.0)
    backend = frame["backend"].str.lower().to_numpy()
    columns = [
        _log(r.tpot_ms), _log(r.tpot_mixed_ms), _log(r.decode_weight_ms), _log(r.decode_kv_ms),
        _log(r.decode_compute_ms), _log(r.decode_comm_ms), _log(r.ttft_ms),
        _log(r.ttft_queued_ms), _log(r.prefill_compute_ms), _log(r.prefill_weight_ms),
        _log(r.prefill_comm_ms),
        r.decode_kv_ms / (decode_memory + eps),
        r.decode_compute_ms / (decode_memory + eps),
        r.decode_comm_ms / (r.tpot_ms + eps),
        r.tpot_mixed_ms / (r.tpot_ms + eps),
        r.prefill_comm_ms / (r.ttft_ms + eps),
        r.ttft_queued_ms / (r.ttft_ms + eps),
        r.prefill_load,
        np.minimum(p.batch_size / np.maximum(r.max_concurrency, 1.0), 10.0),
        r.weights_per_gpu_gb / p.memory_gb,
        _log(p.batch_size), _log(p.isl), _log(p.osl), _log(p.tp), p.pp, _log(p.attention_dp),
        _log(p.moe_ep), _log(gpus_n), _log(p.batch_size / gpus_n),
        _log(p.batch_size * (p.isl + p.osl / 2.0)),
        (p.num_experts > 0).astype(float), p.is_mla, _log(active), active / total,
        np.where(p.num_experts > 0, p.experts_per_token / np.maximum(p.num_experts, 1.0), 1.0),
        1.0 - (p.full_layers + p.sliding_layers) / p.num_layers,
        p.sliding_layers / p.num_layers,
        _log(kv_token),
        p.dense_weight_bytes / np.maximum(p.dense_matmul_params - p.head_bytes / 2.0, 1.0),
        np.where(p.expert_params > 0, p.expert_bytes / np.maximum(p.expert_params, 1.0), 0.0),
        _log(p.gemm_tflops * 1e3 / p.hbm_gbs),
        *((backend == b).astype(float) for b in BACKENDS),
        *_versions(frame["backend_version"]),
    ]
    matrix = np.column_stack(columns).astype(np.float32)
    return Features(frame=frame, physics=p, roofline=r, matrix=matrix)
