"""Ray Tune as a driver of the ask/tell searches: one trial per candidate, run in parallel.

:class:`AskTellSearcher` is a ``ray.tune.search.Searcher``: ``suggest`` hands out the next
candidate of the current generation (asking the search for a new generation when the last is
used up, returning ``None`` while results are still outstanding), and ``on_trial_complete``
tells the search the trial's figures. The trainable evaluates one candidate with the evaluator
it is given (the predictor, or :func:`tune.bench.measuring_evaluator` for real benchmarks).

Ray is initialised here only if nobody did it before (local, no dashboard) and shut down again
afterwards in that case. Ray Tune's progress report goes to stderr, so ``--json`` output on
stdout stays parseable.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from typing import Any

from ray.tune.search import Searcher

from tune.search.asktell import AskTell, SearchState
from tune.search.space import Candidate, Evaluation, SearchSpace

__all__ = ["AskTellSearcher", "run_with_ray_tune"]

SCORE = "score"  # what Ray Tune sees: the objective when SLOs are met, a penalty otherwise


def _score(e: Evaluation, objective: str) -> float:
    if e.meets_slo:
        value = e.objective_value(objective)  # type: ignore[arg-type]
        return value if objective == "throughput_per_gpu" else -value
    return -1e9 * (1.0 + min(e.violation, 1e6))


class AskTellSearcher(Searcher):
    """Bridges an :class:`tune.search.asktell.AskTell` search into Ray Tune."""

    def __init__(self, search: AskTell, space: SearchSpace) -> None:
        super().__init__(metric=SCORE, mode="max")
        self.search = search
        self.space = space
        self._buffer: list[Candidate] = []
        self._trials: dict[str, Candidate] = {}

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if not self._buffer:
            if self.search.done:
                return Searcher.FINISHED
            self._buffer = self.search.ask()
            if not self._buffer:
                return Searcher.FINISHED if self.search.done else None
        candidate = self._buffer.pop(0)
        self._trials[trial_id] = candidate
        return candidate.as_config()

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        candidate = self._trials.pop(trial_id, None)
        if candidate is None:
            return
        if error or not result or "feasible" not in result:
            evaluation = Evaluation.failed(candidate, "trial failed")
        else:
            evaluation = Evaluation.from_metrics(candidate, result)
        self.search.tell([evaluation])


def _trainable(config: dict[str, Any], evaluate: Any, space: SearchSpace) -> dict[str, Any]:
    candidate = space.decode(config["genes"])
    (evaluation,) = evaluate([candidate])
    return evaluation.to_metrics() | {SCORE: _score(evaluation, space.objective)}


def run_with_ray_tune(
    search: AskTell,
    evaluate: Any,
    *,
    max_concurrent_trials: int = 4,
    seed: int = 0,
    storage_path: str | None = None,
) -> SearchState:
    """Drive ``search`` with Ray Tune trials until it is done; returns its final state.

    ``evaluate`` must be picklable (it is shipped to the trial workers once).
    """
    import ray
    from ray import tune

    space: SearchSpace = search.space  # type: ignore[attr-defined]
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        with tempfile.TemporaryDirectory(prefix="foundry-tune-") as tmp:
            tuner = tune.Tuner(
                tune.with_resources(
                    tune.with_parameters(_trainable, evaluate=evaluate, space=space),
                    {"cpu": 1},
                ),
                tune_config=tune.TuneConfig(
                    search_alg=AskTellSearcher(search, space),
                    num_samples=-1,
                    max_concurrent_trials=max_concurrent_trials,
                    reuse_actors=True,
                ),
                run_config=tune.RunConfig(
                    name=f"foundry-optimize-{seed}",
                    storage_path=storage_path or tmp,
                    verbose=0,
                ),
            )
            with contextlib.redirect_stdout(sys.stderr):  # stdout stays for our own output
                tuner.fit()
    finally:
        if started_ray:
            ray.shutdown()
    return search.state
