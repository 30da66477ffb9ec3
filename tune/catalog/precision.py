"""Numeric formats: bytes per weight (scales included) and the tensor-core format they compute in.

A deployment has a ``precision`` (``bf16``, ``fp8``, ``fp4``, ``int4`` ...) and, as in the
measured data, may name the quantisation of its dense GEMMs (``gemm_quant_mode``) and of its MoE
experts (``moe_quant_mode``) separately: DeepSeek-R1 "fp8" keeps block-scaled fp8 experts, gpt-oss
ships mxfp4 experts with bf16 attention. Embeddings and the LM head stay in bf16.

Bytes per weight include the scale factors: nvfp4 stores one fp8 scale per 16 values (4.5 bits),
mxfp4 one 8-bit scale per 32 (4.25 bits), int4 weight-only one bf16 scale per group of 128.

Example:
    >>> from tune.catalog.precision import resolve_formats
    >>> gemm, moe = resolve_formats("fp4", None, None, native="bf16")
    >>> gemm.name, gemm.weight_bytes, gemm.compute
    ('nvfp4', 0.5625, 'fp4')
"""

from __future__ import annotations

from dataclasses import dataclass

from tune.errors import InvalidInput

__all__ = [
    "FORMATS",
    "KV_CACHE_DTYPES",
    "PRECISIONS",
    "WeightFormat",
    "kv_cache_bytes",
    "resolve_formats",
]


@dataclass(frozen=True)
class WeightFormat:
    """How one group of weights is stored and which tensor-core format multiplies it."""

    name: str
    weight_bytes: float
    compute: str  # "bf16" | "fp8" | "fp4"


FORMATS: dict[str, WeightFormat] = {
    f.name: f
    for f in (
        WeightFormat("bf16", 2.0, "bf16"),
        WeightFormat("fp16", 2.0, "bf16"),
        WeightFormat("fp8", 1.0, "fp8"),
        WeightFormat("fp8_block", 1.0 + 4.0 / (128 * 128), "fp8"),
        WeightFormat("int8_wo", 1.0 + 2.0 / 128, "bf16"),
        WeightFormat("nvfp4", 0.5 + 1.0 / 16, "fp4"),
        WeightFormat("mxfp4", 0.5 + 1.0 / 32, "fp8"),
        WeightFormat("int4_wo", 0.5 + 2.0 / 128, "bf16"),
    )
}

# The user-facing precision names and the format each implies when no quant mode is given.
PRECISIONS: dict[str, str] = {
    "bf16": "bf16",
    "fp16": "fp16",
    "fp8": "fp8",
    "fp4": "nvfp4",
    "nvfp4": "nvfp4",
    "mxfp4": "mxfp4",
    "int4": "int4_wo",
    "int8": "int8_wo",
}

KV_CACHE_DTYPES: dict[str, float] = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0}


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, float) and value != value) or str(value).strip() == ""


def _format(name: str, what: str) -> WeightFormat:
    key = name.strip().lower()
    key = PRECISIONS.get(key, key) if what == "precision" else key
    try:
        return FORMATS[key]
    except KeyError:
        known = sorted(set(FORMATS) | set(PRECISIONS))
        raise InvalidInput(f"unknown {what} {name!r}; known: {', '.join(known)}") from None


def resolve_formats(
    precision: object,
    gemm_quant_mode: object,
    moe_quant_mode: object,
    *,
    native: str,
    native_moe: str | None = None,
) -> tuple[WeightFormat, WeightFormat]:
    """The (dense GEMM, MoE expert) weight formats of a deployment.

    Blank values fall back in order: quant mode -> precision -> the checkpoint's native
    formats (``native`` for GEMMs, ``native_moe`` for experts, which defaults to ``native``).
    """
    if _blank(precision) and _blank(gemm_quant_mode) and _blank(moe_quant_mode):
        return _format(native, "precision"), _format(native_moe or native, "precision")
    base = _format(native if _blank(precision) else str(precision), "precision")
    gemm = base if _blank(gemm_quant_mode) else _format(str(gemm_quant_mode), "gemm_quant_mode")
    moe = gemm if _blank(moe_quant_mode) else _format(str(moe_quant_mode), "moe_quant_mode")
    return gemm, moe


def kv_cache_bytes(kv_cache_dtype: object) -> float:
    """Bytes per KV-cache element; blank or ``auto`` means bf16 (what vLLM does by default)."""
    if _blank(kv_cache_dtype) or str(kv_cache_dtype).strip().lower() == "auto":
        return 2.0
    key = str(kv_cache_dtype).strip().lower()
    if key.startswith("fp8"):
        return 1.0
    try:
        return KV_CACHE_DTYPES[key]
    except KeyError:
        raise InvalidInput(
            f"unknown kv_cache_dtype {kv_cache_dtype!r}; known: auto, {', '.join(KV_CACHE_DTYPES)}"
        ) from None
