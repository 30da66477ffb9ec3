"""Turn measured-data rows into the physical quantities the roofline works on.

Catalog look-ups happen once per distinct model, GPU and precision, then broadcast to rows with
numpy, so pricing 100k rows costs about as much as pricing a handful of distinct deployments.

Example:
    >>> import pandas as pd
    >>> from tune.predict.workload import resolve
    >>> frame, physics = resolve(pd.DataFrame([{"model_path": "openai/gpt-oss-120b",
    ...     "system": "h200_sxm", "isl": 1024, "osl": 1024, "batch_size": 16, "tp_size": 2}]))
    >>> float(physics.num_experts[0])
    128.0
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from tune.catalog.architectures import Architecture, resolve_model
from tune.errors import TuneError, UnknownGPU, UnknownModel
from tune.catalog.hardware import GPU, get_gpu
from tune.catalog.precision import kv_cache_bytes, resolve_formats
from tune.predict.roofline import Physics
from tune.predict.schema import normalise, row_label

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["invalid_rows", "physics_from_frame", "resolve"]


def _lookup_each(frame: pd.DataFrame, column: str, fetch):  # noqa: ANN001, ANN202
    """factorize ``column``; fetch each distinct value once; errors name the first bad row."""
    import pandas as pd

    codes, uniques = pd.factorize(frame[column], sort=False)
    found = []
    for code, value in enumerate(uniques):
        try:
            found.append(fetch(str(value)))
        except TuneError as exc:
            where = row_label(frame, int(np.flatnonzero(codes == code)[0]))
            if isinstance(exc, UnknownModel):
                raise UnknownModel(exc.model, where=where) from None
            if isinstance(exc, UnknownGPU):
                raise UnknownGPU(exc.gpu, known=exc.known, where=where) from None
            raise type(exc)(f"{where}: {exc}") from None
    return codes, found


def resolve(
    frame: pd.DataFrame, *, gpus: dict[str, GPU] | None = None
) -> tuple[pd.DataFrame, Physics]:
    """Normalise ``frame`` (see :func:`tune.predict.schema.normalise`) and price its rows' physics.

    ``gpus`` overrides catalog entries by name (for example with a custom hourly price).
    """
    import pandas as pd

    frame = normalise(frame)
    overrides = {k.lower(): v for k, v in (gpus or {}).items()}
    model_codes, archs = _lookup_each(frame, "model_path", resolve_model)
    gpu_codes, gpu_list = _lookup_each(
        frame, "system", lambda name: overrides.get(name.lower()) or get_gpu(name)
    )
    arch_cols = _arch_columns(archs)
    gpu_cols = _gpu_columns(gpu_list)

    # weight formats depend on (model, precision, gemm mode, moe mode)
    keys = (
        pd.Series(model_codes).astype(str) + "\x00" + frame["precision"] + "\x00"
        + frame["gemm_quant_mode"] + "\x00" + frame["moe_quant_mode"]
    )

    def formats(key: str) -> tuple[float, float, float, float]:
        code, precision, gemm_mode, moe_mode = key.split("\x00")
        arch = archs[int(code)]
        gemm, moe = resolve_formats(precision, gemm_mode, moe_mode,
                                    native=arch.native_precision, native_moe=arch.native_moe)
        compute = {"bf16": 0.0, "fp8": 1.0, "fp4": 2.0}
        return gemm.weight_bytes, moe.weight_bytes, compute[gemm.compute], compute[moe.compute]

    fmt_codes, fmt_list = _lookup_each(frame.assign(_fmt=keys), "_fmt", formats)
    fmt = np.array(fmt_list, dtype=float)[fmt_codes]
    gemm_bytes, moe_bytes, gemm_compute, moe_compute = fmt[:, 0], fmt[:, 1], fmt[:, 2], fmt[:, 3]
    kv_codes, kv_list = _lookup_each(frame, "kv_cache_dtype", kv_cache_bytes)
    kv_bytes = np.array(kv_list, dtype=float)[kv_codes]

    a = {name: values[model_codes] for name, values in arch_cols.items()}
    g = {name: values[gpu_codes] for name, values in gpu_cols.items()}
    tflops = np.stack([g["bf16_tflops"], g["fp8_tflops"], g["fp4_tflops"]], axis=1)
    rows = np.arange(len(frame))
    gemm_tflops = tflops[rows, gemm_compute.astype(int)]
    moe_tflops = tflops[rows, moe_compute.astype(int)]

    physics = Physics(
        num_layers=a["num_layers"],
        full_layers=a["full_layers"],
        sliding_layers=a["sliding_layers"],
        sliding_window=a["sliding_window"],
        hidden_size=a["hidden_size"],
        num_heads=a["num_heads"],
        num_kv_heads=a["num_kv_heads"],
        is_mla=a["is_mla"],
        kv_elements_layer_token=a["kv_elements_layer_token"],
        decode_attn_dim=a["decode_attn_dim"],
        prefill_attn_dim=a["prefill_attn_dim"],
        linear_state_elements=a["linear_state_elements"],
        dense_matmul_params=a["dense_matmul_params"],
        dense_weight_bytes=a["dense_params"] * gemm_bytes,
        head_bytes=a["lm_head_params"] * 2.0,
        stored_embedding_bytes=a["untied_embedding_params"] * 2.0,
        expert_params=a["expert_params"],
        expert_bytes=a["expert_params"] * moe_bytes,
        num_experts=a["num_experts"],
        experts_per_token=a["experts_per_token"],
        moe_layers=a["moe_layers"],
        gemm_tflops=gemm_tflops,
        moe_tflops=moe_tflops,
        attn_tflops=g["bf16_tflops"],
        hbm_gbs=g["hbm_gbs"],
        memory_gb=g["memory_gb"],
        link_gbs=g["link_gbs"],
        nvlink_domain_gpus=g["nvlink_domain_gpus"],
        isl=frame["isl"].to_numpy(dtype=float),
        osl=frame["osl"].to_numpy(dtype=float),
        batch_size=frame["batch_size"].to_numpy(dtype=float),
        tp=frame["tp_size"].to_numpy(dtype=float),
        pp=frame["pp_size"].to_numpy(dtype=float),
        attention_dp=frame["attention_dp_size"].to_numpy(dtype=float),
        moe_tp=frame["moe_tp_size"].to_numpy(dtype=float),
        moe_ep=frame["moe_ep_size"].to_numpy(dtype=float),
        kv_bytes=kv_bytes,
    )
    return frame, physics


def invalid_rows(frame: pd.DataFrame, *, gpus: dict[str, GPU] | None = None) -> dict[int, str]:
    """Every row :func:`resolve` would refuse, by position (0-based), with the reason.

    Checks what :func:`tune.predict.schema.normalise` checks plus the catalog look-ups (model,
    GPU, weight and KV-cache formats), each distinct value once.
    """
    import pandas as pd

    invalid: dict[int, str] = {}
    out = normalise(frame, invalid=invalid)
    overrides = {k.lower(): v for k, v in (gpus or {}).items()}
    archs: dict[str, Architecture] = {}

    def model(name: str) -> None:
        archs[name] = resolve_model(name)

    def formats(key: str) -> None:
        name, precision, gemm_mode, moe_mode = key.split("\x00")
        if name in archs:
            arch = archs[name]
            resolve_formats(precision, gemm_mode, moe_mode, native=arch.native_precision,
                            native_moe=arch.native_moe)

    keys = (out["model_path"] + "\x00" + out["precision"] + "\x00" + out["gemm_quant_mode"]
            + "\x00" + out["moe_quant_mode"])
    checks = (
        (out["model_path"], model),
        (out["system"], lambda name: overrides.get(name.lower()) or get_gpu(name)),
        (keys, formats),
        (out["kv_cache_dtype"], kv_cache_bytes),
    )
    for values, check in checks:
        codes, uniques = pd.factorize(values, sort=False)
        for code, value in enumerate(uniques):
            try:
                check(str(value))
            except TuneError as exc:
                for position in np.flatnonzero(codes == code):
                    invalid.setdefault(int(position), str(exc))
    return invalid


def physics_from_frame(frame: pd.DataFrame) -> Physics:
    """Only the physics of :func:`resolve`."""
    return resolve(frame)[1]


def _arch_columns(archs: list[Architecture]) -> dict[str, np.ndarray]:
    def col(fn) -> np.ndarray:  # noqa: ANN001
        return np.array([float(fn(a)) for a in archs], dtype=float)

    return {
        "num_layers": col(lambda a: a.num_layers),
        "full_layers": col(lambda a: a.num_full_layers),
        "sliding_layers": col(lambda a: a.num_sliding_layers),
        "sliding_window": col(lambda a: a.sliding_window or 1),
        "hidden_size": col(lambda a: a.hidden_size),
        "num_heads": col(lambda a: a.num_heads),
        "num_kv_heads": col(lambda a: a.num_kv_heads),
        "is_mla": col(lambda a: a.uses_mla),
        "kv_elements_layer_token": col(lambda a: a.kv_elements_per_layer_token),
        "decode_attn_dim": col(lambda a: sum(a.attention_dims)),
        "prefill_attn_dim": col(lambda a: sum(a.prefill_attention_dims)),
        "linear_state_elements": col(lambda a: a.linear_state_elements),
        "dense_matmul_params": col(lambda a: a.dense_params + a.lm_head_params),
        "dense_params": col(lambda a: a.dense_params),
        "lm_head_params": col(lambda a: a.lm_head_params),
        "untied_embedding_params": col(
            lambda a: 0 if a.tie_word_embeddings else a.embedding_params
        ),
        "expert_params": col(lambda a: a.expert_params),
        "num_experts": col(lambda a: a.num_experts),
        "experts_per_token": col(lambda a: a.num_experts_per_token),
        "moe_layers": col(lambda a: a.num_moe_layers),
    }


def _gpu_columns(gpus: list[GPU]) -> dict[str, np.ndarray]:
    def col(fn) -> np.ndarray:  # noqa: ANN001
        return np.array([float(fn(g)) for g in gpus], dtype=float)

    return {
        "bf16_tflops": col(lambda g: g.tflops("bf16")),
        "fp8_tflops": col(lambda g: g.tflops("fp8")),
        "fp4_tflops": col(lambda g: g.tflops("fp4")),
        "hbm_gbs": col(lambda g: g.hbm_bandwidth_gbs),
        "memory_gb": col(lambda g: g.memory_gb),
        "link_gbs": col(lambda g: g.interconnect_gbs),
        "nvlink_domain_gpus": col(lambda g: g.nvlink_domain_gpus),
    }
