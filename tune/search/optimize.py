"""The optimizer's front door: search a deployment space, or choose among given candidates.

Two drivers run the same ask/tell searches:

* in-process (the default): ask a batch, price it with the predictor in one vectorised call,
  tell, repeat. A realistic space (3 GPU types, TP 1-8, PP 1-2, 16 replicas, 15 batch caps,
  2 precisions, 4 prefill budgets: ~92k points) takes the GA about a second.
* Ray Tune (``driver="ray"``, the CLI's ``--ray``, implied by ``--measure``): every candidate
  is a Ray Tune trial whose trainable prices it (or benchmarks it: ``measure``) and a custom
  ``Searcher`` asks the GA for candidates and tells it results; trials run in parallel.
  Starting Ray costs seconds, so it is worth it when trials are real benchmarks.

Example:
    >>> from tune.search.optimize import optimize
    >>> from tune.search.space import SearchSpace
    >>> result = optimize(SearchSpace(model="meta-llama/Llama-3.1-8B-Instruct",
    ...     gpus=("h100_sxm", "l40s"), num_gpus=8, isl=1024, osl=256, concurrency=64,
    ...     slo_ttft_ms=2000, slo_tpot_ms=40), search="ga", seed=0)
    >>> result.best.meets_slo
    True
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from tune.search.asktell import AskTell, SearchState
from tune.search.deploy import deployment_spec
from tune.errors import InvalidInput, NoFeasibleConfig
from tune.predict.serving import pick, slo_violation
from tune.search.grid import GridSearch
from tune.search.nsga2 import NSGA2Search
from tune.search.space import Candidate, Evaluation, Evaluator, SearchSpace

if TYPE_CHECKING:
    import pandas as pd

    from tune.predict.predictor import Predictor

__all__ = [
    "Evaluate",
    "OptimizeResult",
    "choose_candidate",
    "drive",
    "make_search",
    "optimize",
]

SearchKind = Literal["ga", "grid"]
Evaluate = Callable[[list[Candidate]], list[Evaluation]]


def make_search(space: SearchSpace, kind: SearchKind, *, seed: int = 0, **options: Any) -> AskTell:
    """A fresh ask/tell search of ``kind`` over ``space``."""
    if kind == "ga":
        return NSGA2Search(space, seed=seed, **options)
    if kind == "grid":
        return GridSearch(space, **options)
    raise InvalidInput(f"unknown search {kind!r}; use ga or grid")


def drive(search: AskTell, evaluate: Evaluate) -> SearchState:
    """The in-process driver: ask, evaluate, tell until the search is done."""
    while not search.done:
        batch = search.ask()
        if not batch:
            if search.done:
                break
            raise RuntimeError("search asked nothing while results are pending")
        search.tell(evaluate(batch))
    return search.state


@dataclass(frozen=True)
class OptimizeResult:
    """What a search found."""

    space: SearchSpace
    search: str
    driver: str
    seed: int
    best: Evaluation | None
    front: list[Evaluation]
    evaluated: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        best = None
        if self.best is not None:
            best = self.best.as_dict() | deployment_spec(
                self.space.model, self.best, isl=self.space.isl, osl=self.space.osl
            )
        return {
            "model": self.space.model,
            "objective": self.space.objective,
            "search": self.search,
            "driver": self.driver,
            "seed": self.seed,
            "evaluated": self.evaluated,
            "space_size": self.space.size,
            "seconds": round(self.seconds, 3),
            "slo": {"ttft_ms": self.space.slo_ttft_ms, "tpot_ms": self.space.slo_tpot_ms,
                    "e2e_ms": self.space.slo_e2e_ms},
            "best": best,
            "pareto_front": [e.as_dict() for e in self.front],
        }


def optimize(
    space: SearchSpace,
    *,
    search: SearchKind = "ga",
    seed: int = 0,
    predictor: Predictor | None = None,
    driver: Literal["inprocess", "ray"] = "inprocess",
    evaluate: Evaluate | None = None,
    max_concurrent_trials: int = 4,
    search_options: dict[str, Any] | None = None,
) -> OptimizeResult:
    """Search ``space`` and return the best configuration and the Pareto front.

    ``evaluate`` replaces the predictor (for example with real benchmarks, see
    :func:`tune.bench.measuring_evaluator`). Raises :class:`NoFeasibleConfig` when nothing in the
    space can run at all.
    """
    from tune.predict.predictor import Predictor

    started = time.perf_counter()
    if evaluate is None:
        evaluate = Evaluator(space, predictor or Predictor.load())
    algorithm = make_search(space, search, seed=seed, **(search_options or {}))
    if driver == "ray":
        from tune.search.raytune import run_with_ray_tune

        state = run_with_ray_tune(algorithm, evaluate, max_concurrent_trials=max_concurrent_trials,
                                  seed=seed)
    else:
        state = drive(algorithm, evaluate)
    best = state.best(space.objective)
    if best is None:
        reasons = sorted({e.reason for e in state.evaluations if e.reason})
        raise NoFeasibleConfig(
            f"no configuration of {space.model} on {', '.join(space.gpus)} within "
            f"{space.num_gpus} GPUs can run: " + "; ".join(reasons[:5])
        )
    return OptimizeResult(
        space=space, search=search, driver=driver, seed=seed, best=best,
        front=state.front(space.objective), evaluated=len(state.evaluations),
        seconds=time.perf_counter() - started,
    )


def choose_candidate(
    frame: pd.DataFrame,
    *,
    slo_ttft_ms: float,
    slo_tpot_ms: float,
    predictor: Predictor | None = None,
    risk: float = 0.1,
) -> dict[str, Any]:
    """Pick one row of ``frame`` (predict-input columns plus ``id``).

    The row with the highest predicted output tokens/s per GPU among those whose ``1 - risk``
    quantiles (the 90th percentile by default) meet both SLOs; if none does, the row closest
    to meeting them (smallest summed relative excess). Returns the row's ``id``, its
    predictions and whether it meets the SLOs.
    """
    from tune.predict.features import build_features
    from tune.predict.predictor import Predictor, derived_metrics

    if "id" not in frame.columns:
        raise InvalidInput("the candidates CSV needs an `id` column")
    if frame.empty:
        raise InvalidInput("the candidates CSV has no rows")
    predictor = predictor or Predictor.load()
    features = build_features(frame)
    pred = predictor.predict_features(features, risk=risk)
    e2e, tps = derived_metrics(pred["ttft"], pred["tpot"], features.frame)
    violation = slo_violation(pred["ttft_bound"], pred["tpot_bound"], slo_ttft_ms=slo_ttft_ms,
                              slo_tpot_ms=slo_tpot_ms)
    meets = violation <= 0
    position, _ = pick(tps, violation)
    ident = frame["id"].iloc[position]
    return {
        "id": ident.item() if hasattr(ident, "item") else ident,
        "pred_ttft_ms": float(pred["ttft"][position]),
        "pred_tpot_ms": float(pred["tpot"][position]),
        "pred_e2e_ms": float(e2e[position]),
        "pred_output_tps_per_gpu": float(tps[position]),
        "pred_ttft_ms_bound": float(pred["ttft_bound"][position]),
        "pred_tpot_ms_bound": float(pred["tpot_bound"][position]),
        "pred_case": str(pred["case"][position]),
        "risk": risk,
        "meets_slo": bool(meets[position]),
        "slo_violation": float(violation[position]),
        "candidates": len(frame),
        "candidates_meeting_slo": int(meets.sum()),
    }
