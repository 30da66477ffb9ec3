"""Optimizer: GA (NSGA-II) against the exhaustive grid, and vectorised prediction throughput.

    ga vs grid        on realistic spaces (3 GPU types x TP 1-8 x PP 1-2 x 16 replicas x 15
                      max_num_seqs x 2 precisions x 4 prefill budgets = 46,080 configurations):
                      wall time of each, and the GA's gap to the grid optimum (target: < 1%,
                      GA under 10 s). Three seeds per space; the worst gap is reported.
    prediction        rows/s of Predictor.predict on 20,000 rows (one vectorised call) against
                      the same predictor called row by row (the baseline); target >= 10,000.
    accuracy          the cross-validation report stored with the shipped artifacts (run by
                      `foundry tune train`): MAPE per scheme against the issue's targets and
                      against the previous recipe (artifact version 1, the baseline), signed
                      mean error (>= 0 is the safe side), p90 coverage, and the picking
                      evaluation (share of groups whose pick meets the SLO by the measured
                      values, median regret).

    python -m benchmarks.run tune
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from benchmarks._meta import write

SPACES = [
    ("meta-llama/Llama-3.1-70B-Instruct", "throughput_per_gpu"),
    ("Qwen/Qwen3-32B", "cost"),
    ("openai/gpt-oss-120b", "throughput_per_gpu"),
]
GPUS = ("h100_sxm", "h200_sxm", "b200_sxm")
SEEDS = (0, 1, 2)
# MAPE (%) of artifact version 1 (no intervals, no shift), and the targets
BASELINE_MAPE = {"random": {"ttft": 18.3, "tpot": 9.0},
                 "leave_one_model_out": {"ttft": 50.3, "tpot": 24.6},
                 "leave_one_gpu_out": {"ttft": 39.9, "tpot": 22.8}}
TARGET_MAPE = {"random": {"ttft": 18.0, "tpot": 9.0},
               "leave_one_model_out": {"ttft": 25.0, "tpot": 15.0},
               "leave_one_gpu_out": {"ttft": 25.0, "tpot": 15.0}}
PREDICT_ROWS = 20_000
BASELINE_ROWS = 200
REPEATS = 3


def _best_time(fn) -> float:  # noqa: ANN001
    best = float("inf")
    for _ in range(REPEATS):  # other processes only ever slow a run down: keep the best
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def main(out_dir: Path) -> dict:
    from tune.search.optimize import optimize
    from tune.predict.predictor import Predictor
    from tune.search.space import SearchSpace

    predictor = Predictor.load()
    search = {}
    for model, objective in SPACES:
        space = SearchSpace(model=model, gpus=GPUS, num_gpus=16, isl=2048, osl=512,
                            concurrency=256, slo_ttft_ms=2000, slo_tpot_ms=40, objective=objective)
        grid = optimize(space, search="grid", predictor=predictor)
        optimum = grid.best.objective_value(objective)
        runs = []
        for seed in SEEDS:
            ga = optimize(space, search="ga", seed=seed, predictor=predictor)
            value = ga.best.objective_value(objective)
            gap = (optimum - value) / optimum if objective == "throughput_per_gpu" else (value - optimum) / optimum
            runs.append({"seed": seed, "seconds": round(ga.seconds, 3), "evaluated": ga.evaluated,
                         "objective": round(value, 4), "gap_pct": round(100 * gap, 3)})
        search[f"{model}:{objective}"] = {
            "space_size": space.size,
            "grid": {"seconds": round(grid.seconds, 3), "evaluated": grid.evaluated,
                     "objective": round(optimum, 4), "best": grid.best.as_dict()},
            "ga": runs,
            "ga_worst_gap_pct": max(r["gap_pct"] for r in runs),
            "ga_max_seconds": max(r["seconds"] for r in runs),
            "grid_seconds / ga_seconds": round(grid.seconds / max(r["seconds"] for r in runs), 2),
        }

    row = {"backend": "vllm", "model_path": "Qwen/Qwen3-235B-A22B-FP8", "system": "h200_sxm",
           "precision": "fp8", "isl": 1024, "osl": 1024, "tp_size": 4}
    rows = pd.DataFrame([row | {"batch_size": 1 + i % 256} for i in range(PREDICT_ROWS)])
    vectorised = PREDICT_ROWS / _best_time(lambda: predictor.predict(rows))
    few = rows.iloc[:BASELINE_ROWS]
    row_by_row = BASELINE_ROWS / _best_time(
        lambda: [predictor.predict(few.iloc[[i]]) for i in range(BASELINE_ROWS)])
    prediction = {"rows_per_s": round(vectorised), "row_by_row_rows_per_s": round(row_by_row),
                  "vectorised / row_by_row": round(vectorised / row_by_row, 1)}

    recorded = predictor.metadata.get("cross_validation") or {}
    cv = recorded.get("results", {})
    picking = recorded.get("picking", {})
    summary = {
        "ga_worst_gap_pct": max(s["ga_worst_gap_pct"] for s in search.values()),
        "ga_max_seconds": max(s["ga_max_seconds"] for s in search.values()),
        "grid_max_seconds": max(s["grid"]["seconds"] for s in search.values()),
        "ga_within_1pct_under_10s": all(
            s["ga_worst_gap_pct"] <= 1.0 and s["ga_max_seconds"] < 10 for s in search.values()),
        "prediction_rows_per_s": prediction["rows_per_s"],
        "prediction_vectorised / row_by_row": prediction["vectorised / row_by_row"],
        "prediction_at_least_10k_rows_per_s": prediction["rows_per_s"] >= 10_000,
        "cv_mape_pct": {f"{scheme}:{target}": round(m["mape"], 1)
                        for scheme, by in cv.items() for target, m in by.items()},
        "cv_mape / baseline_mape": {
            f"{scheme}:{target}": round(m["mape"] / BASELINE_MAPE[scheme][target], 2)
            for scheme, by in cv.items() for target, m in by.items()},
        "cv_mape_target_met": {
            f"{scheme}:{target}": m["mape"] <= TARGET_MAPE[scheme][target]
            for scheme, by in cv.items() for target, m in by.items()},
        "cv_signed_error_safe": {
            f"{scheme}:{target}": m["signed_mean_error"] >= 0
            for scheme, by in cv.items() for target, m in by.items()},
        "picking_met_slo_pct": {s: round(p["met_slo_pct"], 1) for s, p in picking.items()},
        "picking_median_regret_pct": {s: round(p["median_regret_pct"], 1)
                                      for s, p in picking.items()},
    }
    parameters = {"spaces": SPACES, "gpus": GPUS, "num_gpus": 16, "isl": 2048, "osl": 512,
                  "concurrency": 256, "slo_ttft_ms": 2000, "slo_tpot_ms": 40, "seeds": SEEDS,
                  "predict_rows": PREDICT_ROWS, "baseline_rows": BASELINE_ROWS,
                  "artifacts_sha256": predictor.metadata.get("training_data_sha256")}
    results = {"search": search, "prediction": prediction, "cross_validation": cv,
               "picking": picking}
    return write(out_dir, "tune", parameters, results, summary)
