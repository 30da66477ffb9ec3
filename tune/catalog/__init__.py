"""Catalogs: what the optimizer knows about hardware, model architectures and number formats.

    hardware        GPU datasheets (FLOP/s by precision, HBM bandwidth, memory, interconnect)
    architectures   model shapes from the built-in catalog or any Hugging Face config.json
    precision       weight / KV-cache formats and the tensor-core format that multiplies them

The bottom layer of ``tune``: it imports nothing of ``tune`` but :mod:`tune.errors`.

Example:
    >>> from tune.catalog import get_gpu
    >>> get_gpu("h100_sxm").memory_gb
    80.0
"""

from __future__ import annotations

from tune.catalog.architectures import (
    CATALOG,
    Architecture,
    catalog_ids,
    from_config,
    load_config_json,
    resolve_model,
)
from tune.catalog.hardware import GPU, GPUS, get_gpu, gpu_names
from tune.catalog.precision import (
    FORMATS,
    KV_CACHE_DTYPES,
    PRECISIONS,
    WeightFormat,
    kv_cache_bytes,
    resolve_formats,
)

__all__ = [
    "CATALOG",
    "FORMATS",
    "GPU",
    "GPUS",
    "KV_CACHE_DTYPES",
    "PRECISIONS",
    "Architecture",
    "WeightFormat",
    "catalog_ids",
    "from_config",
    "get_gpu",
    "gpu_names",
    "kv_cache_bytes",
    "load_config_json",
    "resolve_formats",
    "resolve_model",
]
