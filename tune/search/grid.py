"""Exhaustive grid search behind the ask/tell interface: the baseline the GA is judged against,
and the method of choice for small spaces.

Example:
    >>> from tune.search.grid import GridSearch
    >>> from tune.search.space import SearchSpace
    >>> space = SearchSpace(model="Qwen/Qwen3-8B", gpus=("h100_sxm",), num_gpus=2, isl=1024,
    ...     osl=256, concurrency=8, slo_ttft_ms=1000, slo_tpot_ms=50, tp=(1, 2), pp=(1,),
    ...     max_num_seqs=(8,), precisions=("native",), max_num_batched_tokens=(8192,))
    >>> [c.genes for c in GridSearch(space).ask()]
    [(0, 0, 0, 0, 0, 0, 0), (0, 0, 0, 1, 0, 0, 0), (0, 1, 0, 0, 0, 0, 0), (0, 1, 0, 1, 0, 0, 0)]
"""

from __future__ import annotations

import itertools

from tune.search.asktell import SearchState
from tune.search.space import Candidate, Evaluation, SearchSpace

__all__ = ["GridSearch"]


class GridSearch:
    """Hands out every point of the space once, ``batch_size`` at a time."""

    def __init__(self, space: SearchSpace, *, batch_size: int = 8192) -> None:
        self.space = space
        self.batch_size = batch_size
        self._points = itertools.product(*(range(u + 1) for u in space.upper_bounds))
        self._exhausted = False
        self._state = SearchState()

    @property
    def state(self) -> SearchState:
        return self._state

    @property
    def done(self) -> bool:
        return self._exhausted and not self._state.pending

    def ask(self, n: int | None = None) -> list[Candidate]:
        take = list(itertools.islice(self._points, n or self.batch_size))
        if len(take) < (n or self.batch_size):
            self._exhausted = True
        cands = [self.space.decode(g) for g in take]
        for c in cands:
            self._state.pending[c.genes] = c
        return cands

    def tell(self, evaluations: list[Evaluation]) -> None:
        for e in evaluations:
            if self._state.pending.pop(e.candidate.genes, None) is not None:
                self._state.evaluations.append(e)
        if not self._state.pending:
            self._state.generation += 1
