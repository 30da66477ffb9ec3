"""Finding and reading measured serving data (the training set of the predictor).

The public measurements live outside the repository (``../shared/perfdata`` next to the project
root, or wherever ``FOUNDRY_PERFDATA`` points); a user's clone has none and predicts from the
shipped artifacts. ``foundry bench`` writes CSVs in the same schema, so a directory may mix the
public file with a user's own measurements: every ``*.csv`` in it whose header carries the
measured-data columns is read, anything else (the argonne files) is skipped.

Example:
    >>> from tune.predict.perfdata import default_data_dir
    >>> default_data_dir().name
    'perfdata'
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from tune.errors import DataError
from tune.predict.schema import INPUT_COLUMNS, TARGET_COLUMNS

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ENV_VAR", "data_hash", "default_data_dir", "load_measured"]

ENV_VAR = "FOUNDRY_PERFDATA"


def default_data_dir() -> Path:
    """``$FOUNDRY_PERFDATA`` if set, else ``<repo root>/../shared/perfdata``."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    return Path(__file__).resolve().parents[3] / "shared" / "perfdata"


def _is_measured(path: Path) -> bool:
    try:
        with path.open() as handle:
            header = handle.readline()
    except OSError:
        return False
    names = {c.strip() for c in header.split(",")}
    return all(c in names for c in TARGET_COLUMNS) and "model_path" in names


def load_measured(path: str | Path) -> pd.DataFrame:
    """Every measured-data row under ``path`` (a CSV file, or a directory of them).

    Rows without a positive TTFT and TPOT are dropped; a ``source`` column names the file.
    """
    import pandas as pd

    root = Path(path).expanduser()
    if root.is_dir():
        files = sorted(p for p in root.glob("*.csv") if _is_measured(p))
    elif root.is_file():
        files = [root] if _is_measured(root) else []
    else:
        raise DataError(f"no such file or directory: {root}")
    if not files:
        raise DataError(
            f"{root}: no CSV with the measured-data columns ({', '.join(TARGET_COLUMNS)})"
        )
    frames = []
    for file in files:
        frame = pd.read_csv(file, keep_default_na=True)
        frame["source"] = file.name
        frames.append(frame)
    data = pd.concat(frames, ignore_index=True)
    for column in TARGET_COLUMNS:
        data[column] = pd.to_numeric(data[column], errors="coerce")
    good = (data[TARGET_COLUMNS] > 0).all(axis=1)
    data = data[good].reset_index(drop=True)
    if data.empty:
        raise DataError(f"{root}: no row with positive {' and '.join(TARGET_COLUMNS)}")
    return data


def data_hash(frame: pd.DataFrame) -> str:
    """sha256 of the rows' inputs and targets, independent of row order and extra columns."""
    columns = [c for c in [*INPUT_COLUMNS, *TARGET_COLUMNS] if c in frame.columns]
    text = frame[columns].astype(object).where(frame[columns].notna(), "").astype(str)
    canonical = text.apply("|".join, axis=1).sort_values()
    digest = hashlib.sha256("\n".join(canonical).encode())
    return digest.hexdigest()
