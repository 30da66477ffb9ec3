"""The measured-data schema: one row = one serving configuration under closed-loop load.

It is the schema of ``measured_serving.csv`` (see ``../shared/perfdata/README.md``), of what
``foundry bench`` writes, of what ``foundry tune train --data`` reads and of the input of
``foundry predict``. Rows are numbered from 1 (the first line after the header) in errors.

Required input columns: ``model_path``, ``system``, ``isl``, ``osl``, ``batch_size``,
``tp_size``. The rest take the defaults in :data:`DEFAULTS`; ``0`` or empty in
``attention_dp_size``, ``moe_tp_size`` and ``moe_ep_size`` means "not used" (as the source
format writes it), and a blank ``moe_tp_size`` means "experts sharded like attention"
(``tp_size * attention_dp_size / moe_ep_size``).

Example:
    >>> import pandas as pd
    >>> from tune.predict.schema import normalise
    >>> frame = normalise(pd.DataFrame([{"model_path": "Qwen/Qwen3-8B", "system": "h100_sxm",
    ...     "isl": 1024, "osl": 128, "batch_size": 8, "tp_size": 1}]))
    >>> int(frame.loc[0, "moe_tp_size"]), frame.loc[0, "backend"]
    (1, 'vllm')
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tune.errors import InvalidInput

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DEFAULTS",
    "INPUT_COLUMNS",
    "MEASURED_COLUMNS",
    "NOT_USED_COLUMNS",
    "NUMERIC_COLUMNS",
    "PREDICTION_COLUMNS",
    "REQUIRED_COLUMNS",
    "TARGET_COLUMNS",
    "normalise",
    "row_label",
]

INPUT_COLUMNS = [
    "backend", "backend_version", "model_path", "system", "precision", "gemm_quant_mode",
    "moe_quant_mode", "isl", "osl", "batch_size", "tp_size", "pp_size", "attention_dp_size",
    "moe_tp_size", "moe_ep_size",
]
TARGET_COLUMNS = ["silicon_ttft_ms", "silicon_tpot_ms"]
MEASURED_COLUMNS = ["id", *INPUT_COLUMNS, *TARGET_COLUMNS]
PREDICTION_COLUMNS = [
    "pred_ttft_ms", "pred_tpot_ms", "pred_e2e_ms", "pred_output_tps_per_gpu",
    "pred_ttft_ms_p90", "pred_tpot_ms_p90", "pred_case",
]
REQUIRED_COLUMNS = ["model_path", "system", "isl", "osl", "batch_size", "tp_size"]
NUMERIC_COLUMNS = [
    "isl", "osl", "batch_size", "tp_size", "pp_size", "attention_dp_size", "moe_tp_size",
    "moe_ep_size",
]
# "not used" may be written as 0 (or left empty) in these: they take their default
NOT_USED_COLUMNS = ("attention_dp_size", "moe_tp_size", "moe_ep_size")
DEFAULTS: dict[str, object] = {
    "backend": "vllm",
    "backend_version": "",
    "precision": "",
    "gemm_quant_mode": "",
    "moe_quant_mode": "",
    "kv_cache_dtype": "auto",
    "pp_size": 1,
    "attention_dp_size": 1,
    "moe_ep_size": 1,
}


def row_label(frame: pd.DataFrame, position: int) -> str:
    """How errors name the row at ``position`` (0-based): 1-based, with its ``id`` if any."""
    label = f"row {position + 1}"
    if "id" in frame.columns:
        label += f" (id={frame['id'].iloc[position]!s})"
    return label


def normalise(frame: pd.DataFrame, *, invalid: dict[int, str] | None = None) -> pd.DataFrame:
    """A copy of ``frame`` with defaults filled in and numeric columns checked.

    ``0`` or empty in :data:`NOT_USED_COLUMNS` means "not used" (the measured-data format
    writes it so) and takes the default. Without ``invalid``, raises :class:`InvalidInput`
    naming the first bad row or the missing column; with a dict, every bad row's position
    (0-based) is recorded there with its message and the row is left in the frame for the
    caller to drop.
    """
    import numpy as np
    import pandas as pd

    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise InvalidInput(f"missing required column(s): {', '.join(missing)}")
    out = frame.copy()
    out.index = pd.RangeIndex(len(out))
    for column in NOT_USED_COLUMNS:
        if column in out.columns:
            text = out[column].astype(str).str.strip()
            zero = pd.to_numeric(text, errors="coerce") == 0
            out[column] = out[column].where(~zero, np.nan)
    for column, default in DEFAULTS.items():
        if column not in out.columns:
            out[column] = default
        else:
            blank = out[column].isna() | (out[column].astype(str).str.strip() == "")
            out[column] = out[column].where(~blank, default)
    for column in ("model_path", "system", "backend", "backend_version", "precision",
                   "gemm_quant_mode", "moe_quant_mode", "kv_cache_dtype"):
        out[column] = out[column].astype(str).str.strip().replace({"nan": "", "None": ""})
    found: dict[int, str] = {}
    for column in NUMERIC_COLUMNS:
        if column not in out.columns:
            continue
        present = out[column].notna() & (out[column].astype(str).str.strip() != "")
        values = pd.to_numeric(out[column].where(present), errors="coerce")
        bad = (present & (values.isna() | (values <= 0))) | (~present & (column != "moe_tp_size"))
        for position in np.flatnonzero(bad.to_numpy()):
            found.setdefault(int(position), f"{column} must be a positive number, got "
                                            f"{str(out[column].iloc[position])!r}")
        out[column] = values.where(~bad, 1.0).astype(float)
    for column in ("model_path", "system"):
        for position in np.flatnonzero((out[column] == "").to_numpy()):
            found.setdefault(int(position), f"{column} is empty")
    if found and invalid is None:
        position = min(found)
        raise InvalidInput(f"{row_label(out, position)}: {found[position]}")
    if invalid is not None:
        invalid.update(found)
    derived = out["tp_size"] * out["attention_dp_size"] / out["moe_ep_size"]
    if "moe_tp_size" not in out.columns:
        out["moe_tp_size"] = derived
    else:
        out["moe_tp_size"] = out["moe_tp_size"].where(out["moe_tp_size"].notna(), derived)
    out["moe_tp_size"] = out["moe_tp_size"].clip(lower=1)
    return out
