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
from typing import TYPE_CHECKING, Any

from tune.errors import DataError
from tune.predict.schema import INPUT_COLUMNS, TARGET_COLUMNS

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ENV_VAR", "data_hash", "default_data_dir", "load_measured", "measured_frame"]

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


def _keep_measured(data: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    for column in TARGET_COLUMNS:
        data[column] = pd.to_numeric(data[column], errors="coerce")
    good = (data[TARGET_COLUMNS] > 0).all(axis=1)
    return data[good].reset_index(drop=True)


def measured_frame(
    rows: list[dict[str, Any]], *, source: str, since: str | None = None
) -> pd.DataFrame:
    """Rows of the measured-data schema (``foundry bench`` rows from the metrics store) as a
    frame like :func:`load_measured`'s. ``since`` (ISO 8601) keeps the rows whose
    ``measured_utc`` is at or after it; rows without one are then left out."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    for column in (*INPUT_COLUMNS, *TARGET_COLUMNS):
        if column not in frame.columns:
            frame[column] = None
    if since is not None:
        try:
            cutoff = pd.Timestamp(since)
        except ValueError as exc:
            raise DataError(f"--since {since!r} is not an ISO 8601 time") from exc
        cutoff = cutoff.tz_localize("UTC") if cutoff.tzinfo is None else cutoff.tz_convert("UTC")
        stamps = pd.to_datetime(frame.get("measured_utc"), errors="coerce", utc=True)
        frame = frame[stamps >= cutoff] if stamps is not None else frame.iloc[0:0]
    frame = frame.assign(source=source)
    return _keep_measured(frame) if len(frame) else frame.reset_index(drop=True)


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
    data = _keep_measured(pd.concat(frames, ignore_index=True))
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
