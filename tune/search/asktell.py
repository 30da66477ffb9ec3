"""The ask/tell interface every search algorithm implements, and its typed state.

A driver (the in-process loop of :func:`tune.search.optimize.optimize`, or the Ray Tune searcher in
:mod:`tune.search.raytune`) repeatedly asks for candidates, evaluates them however it likes (the
predictor, or a real benchmark) and tells the results back::

    search = NSGA2Search(space, seed=0)
    while not search.done:
        candidates = search.ask()
        search.tell(evaluate(candidates))
    best = search.state.best(space.objective)

``ask`` may return fewer candidates than asked (an empty list while a generation still waits
for results); ``tell`` accepts results in any order and in any grouping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from tune.search.space import Candidate, Evaluation, Objective

__all__ = ["AskTell", "SearchState", "best_of", "pareto_front"]


def _key(e: Evaluation, objective: Objective) -> tuple[float, float]:
    """Sort key, smaller is better: meets SLO first, then objective, then TPOT."""
    value = e.objective_value(objective)
    return (-value if objective == "throughput_per_gpu" else value, e.tpot_ms)


def best_of(evaluations: list[Evaluation], objective: Objective) -> Evaluation | None:
    """The best SLO-meeting evaluation; if none meets them, the feasible one closest to."""
    meeting = [e for e in evaluations if e.meets_slo]
    if meeting:
        return min(meeting, key=lambda e: (*_key(e, objective), e.candidate.genes))
    feasible = [e for e in evaluations if e.feasible]
    if feasible:
        return min(feasible, key=lambda e: (e.violation, *_key(e, objective), e.candidate.genes))
    return None


def pareto_front(evaluations: list[Evaluation], objective: Objective) -> list[Evaluation]:
    """SLO-meeting evaluations not dominated on (objective, TPOT), best objective first."""
    pool = sorted(
        {e.candidate.genes: e for e in evaluations if e.meets_slo}.values(),
        key=lambda e: (*_key(e, objective), e.candidate.genes),
    )
    front: list[Evaluation] = []
    best_tpot = float("inf")
    for e in pool:  # objective ascending-is-better order; keep strictly better TPOT
        if e.tpot_ms < best_tpot:
            front.append(e)
            best_tpot = e.tpot_ms
    return front


@dataclass
class SearchState:
    """Everything a search knows; enough to report progress or resume."""

    generation: int = 0
    evaluations: list[Evaluation] = field(default_factory=list)
    pending: dict[tuple[int, ...], Candidate] = field(default_factory=dict)

    def best(self, objective: Objective) -> Evaluation | None:
        return best_of(self.evaluations, objective)

    def front(self, objective: Objective) -> list[Evaluation]:
        return pareto_front(self.evaluations, objective)


class AskTell(Protocol):
    """A search algorithm driven from outside."""

    @property
    def state(self) -> SearchState: ...

    @property
    def done(self) -> bool: ...

    def ask(self, n: int | None = None) -> list[Candidate]:
        """Up to ``n`` candidates to evaluate next (all of a batch when ``n`` is None)."""
        ...

    def tell(self, evaluations: list[Evaluation]) -> None:
        """Results for candidates this search asked for."""
        ...
