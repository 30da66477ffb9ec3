"""notebooks/optimize.ipynb runs top to bottom (no network; works without ../shared/perfdata)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[3] / "notebooks" / "optimize.ipynb"

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.mark.parametrize("perfdata", ["present", "absent"])
def test_optimize_notebook_executes(perfdata: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    if perfdata == "absent":
        monkeypatch.setenv("FOUNDRY_PERFDATA", str(tmp_path / "no-data"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    started = time.monotonic()
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    assert time.monotonic() - started < 60
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "GA:" in text and "gap" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    data = Path(os.environ.get("FOUNDRY_PERFDATA", NOTEBOOK.parents[2] / "shared" / "perfdata"))
    has_data = perfdata == "present" and (data / "measured_serving.csv").is_file()
    assert len(images) == (2 if has_data else 1)
