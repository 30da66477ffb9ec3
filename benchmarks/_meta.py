"""What every benchmark result records about where and how it ran."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path


def machine() -> dict:
    return {"nproc": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}


def git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write(out_dir: Path, name: str, parameters: dict, results: dict, summary: dict) -> dict:
    doc = {
        "name": name,
        "time": datetime.now(timezone.utc).isoformat(),
        "git_sha": git_sha(),
        "machine": machine(),
        "parameters": parameters,
        "results": results,
        "summary": summary,
    }
    (out_dir / f"{name}.json").write_text(json.dumps(doc, indent=2, default=str))
    return doc
