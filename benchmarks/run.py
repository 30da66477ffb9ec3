"""`make bench`: run every benchmark, side by side with its baseline, and write JSON results.

    python -m benchmarks.run              # all
    python -m benchmarks.run engine       # only benchmarks/bench_engine.py

Each ``benchmarks/bench_<name>.py`` has ``main(out_dir: Path) -> dict`` and writes
``benchmarks/results/<name>.json`` (git SHA, machine, parameters, results, ratios).
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "results"


def main(argv: list[str]) -> int:
    names = argv or sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    OUT.mkdir(exist_ok=True)
    failed = []
    for name in names:
        print(f"== bench {name}", flush=True)
        t0 = time.monotonic()
        try:
            result = importlib.import_module(f"benchmarks.bench_{name}").main(OUT)
        except Exception as exc:  # keep going: one broken bench should not hide the others
            print(f"   FAILED: {exc!r}", flush=True)
            failed.append(name)
            continue
        print(json.dumps(result.get("summary", result), indent=2, default=str))
        print(f"   ({time.monotonic() - t0:.0f} s) -> {OUT / (name + '.json')}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
