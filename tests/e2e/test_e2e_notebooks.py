"""notebooks/usage.ipynb, benchmark_and_retrain.ipynb and deploy.ipynb executed against a live stack,
their outputs checked; then the analytics routes and `foundry usage --interval` on that stack.

Both notebooks share one stack of their own (the default configuration plus prices, so costs are
not zero): the session stack counts every request it serves (test_e2e_stack.py), and these
notebooks send their own. It uses Serve's Python proxy: the notebooks do not measure ingress, and
on a loaded CI machine Serve has killed the HAProxy manager before it reported ready. Set FOUNDRY_NOTEBOOK_OUT to a directory to keep the executed notebooks.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import nbformat
import pytest
from e2e_support import ADMIN_KEY, free_port, start_stack
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
CELL_TIMEOUT_S = 300

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200), pytest.mark.filterwarnings("ignore::DeprecationWarning")]

PRICES = """
[models."foundry-tiny".pricing]
input_per_1m = 2.5
output_per_1m = 10.0

[models."all-minilm-l6-v2".pricing]
input_per_1m = 0.1
"""


@pytest.fixture(scope="module")
def priced_stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("notebooks")
    config = tmp / "foundry.toml"
    default = (REPO / "control" / "default.toml").read_text()
    config.write_text(re.sub(r"(?m)^ingress = .*$", 'ingress = "proxy"', default) + PRICES)
    stack = start_stack(tmp / "home", free_port(), config=config)
    yield stack
    stack.stop()
    shutil.rmtree(tmp / "home", ignore_errors=True)


def execute(name: str, stack, monkeypatch: pytest.MonkeyPatch) -> nbformat.NotebookNode:
    """Run the notebook top to bottom in a kernel that sees the stack as a user's shell would."""
    for var, value in stack.env().items():
        monkeypatch.setenv(var, value)
    monkeypatch.delenv("FOUNDRY_API_KEY", raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()  # fmt: skip
    if out := os.environ.get("FOUNDRY_NOTEBOOK_OUT"):
        nbformat.write(nb, Path(out) / f"{name}.ipynb")
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    warnings = [o["text"] for o in outputs if o.output_type == "stream" and o["name"] == "stderr"]
    assert not warnings, warnings  # a notebook a user runs should not print warnings either
    return nb


def text_of(nb: nbformat.NotebookNode) -> str:
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    return "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs)


def images_of(nb: nbformat.NotebookNode) -> list[str]:
    return [o["data"]["image/png"] for cell in nb.cells for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]


def test_usage_notebook(priced_stack, monkeypatch):
    nb = execute("usage", priced_stack, monkeypatch)
    text = text_of(nb)
    sent = int(re.search(r"sent (\d+) requests with 3 keys", text)[1])
    assert sent == 2 + 4 + 6 + 3
    assert f"requests counted in the time series: {sent}" in text  # the rollup counted every request
    assert re.search(r"most expensive key: heavy \(\$0\.0\d*[1-9]", text)  # priced, and the right key
    assert "foundry-tiny" in text and "all-minilm-l6-v2" in text  # one column per model
    assert len(images_of(nb)) == 1


def test_benchmark_and_retrain_notebook(priced_stack, monkeypatch):
    nb = execute("benchmark_and_retrain", priced_stack, monkeypatch)
    text = text_of(nb)
    assert "3 levels measured, 24 requests ok" in text
    assert re.search(r"predictor \S+ \| MAPE TTFT \d+%, TPOT \d+%", text)  # compared with the prediction
    assert "3 rows stored in the metrics store" in text
    trained = re.search(r"trained version (v\d{4}) on (\d+) rows \(3 from the metrics store\); it is now active", text)
    assert trained, text[-2000:]
    assert (priced_stack.home / "tune" / "active").read_text().strip() == trained[1]
    assert f"predictor {trained[1]} | MAPE" in text  # the comparison after retraining used the new version
    assert len(images_of(nb)) == 1


def test_deploy_notebook(priced_stack, monkeypatch):
    nb = execute("deploy", priced_stack, monkeypatch)
    text = text_of(nb)
    assert "model foundry-tiny:" in text and "deployment tiny-notebook is running" in text
    assert re.search(r"reply tokens: [1-8]\b", text)
    assert "ttft_ms" in text and "requests_ok" in text  # the benchmark's figures
    assert "deployment tiny-notebook is deleted" in text and "'tiny-notebook'" not in text.split("is deleted")[-1]


def test_analytics_through_the_running_stack(priced_stack):
    """The routes and `foundry usage --interval` through the metrics actor of a real stack (after
    the notebooks' traffic): series from the rollups, and bad input as a clean 400."""
    out = priced_stack.cli("usage", "--since", "2h", "--interval", "5m", "--by", "model", "--project", "notebook-usage")
    assert "requests per 5m" in out.stdout and re.search(r"foundry-tiny\s+\S+\s+total 12", out.stdout)
    data = json.loads(priced_stack.cli("usage", "--since", "2h", "--interval", "1h", "--metric", "cost",
                                       "--by", "key", "--project", "notebook-usage", "--json").stdout)  # fmt: skip
    assert len(data["series"]) == 3 and all(p["value"] >= 0 for s in data["series"] for p in s["points"])
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    since = (datetime.now(timezone.utc) - timedelta(days=60)).isoformat()
    r = httpx.get(f"{priced_stack.api_url}/analytics/timeseries", params={"interval": "5m", "since": since},
                  headers=headers, timeout=30)  # fmt: skip
    assert r.status_code == 400 and r.json()["error"]["param"] == "interval"
    assert "at most 10000" in r.json()["error"]["message"] and "Traceback" not in r.text
