"""NSGA-II over the deployment space (DEAP), behind the ask/tell interface.

Objectives: the space's objective (throughput per GPU, maximised; or cost per million tokens,
minimised) and TPOT (minimised), so the final population spans the throughput/interactivity
Pareto front. Constraints are handled by domination (Deb's rule, encoded in the fitness): a
candidate meeting every SLO dominates one that misses any; among those that miss, the smaller
summed relative SLO excess wins; a candidate that cannot run at all (memory, divisibility, GPU
budget) is worse still.

Each generation: binary tournaments on dominance and crowding distance pick parents
(``selTournamentDCD``), the injected crossover recombines pairs with probability ``cx_prob``,
the injected mutation alters each child with probability ``mut_prob``, and ``selNSGA2`` keeps
the best ``population_size`` of parents and children. Candidates already evaluated are not asked
again. Every random draw happens in the search's own seeded state: same seed, same proposals.

Example:
    >>> from tune.search.nsga2 import NSGA2Search
    >>> from tune.search.space import SearchSpace
    >>> space = SearchSpace(model="Qwen/Qwen3-8B", gpus=("h100_sxm",), num_gpus=8, isl=1024,
    ...     osl=256, concurrency=32, slo_ttft_ms=1000, slo_tpot_ms=50)
    >>> a = [c.genes for c in NSGA2Search(space, seed=3).ask()]
    >>> b = [c.genes for c in NSGA2Search(space, seed=3).ask()]
    >>> a == b
    True
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from deap import base, tools

from tune.search.asktell import SearchState
from tune.search.operators import Crossover, MixedMutation, Mutation, UniformCrossover
from tune.search.space import Candidate, Evaluation, SearchSpace

__all__ = ["NSGA2Search"]

_INFEASIBLE = 1e3  # violation assigned to candidates that cannot run at all
_WORST = 1e12


class _Individual(list):
    fitness: base.Fitness


class NSGA2Search:
    """Multi-objective genetic search with injected operators (see module docstring)."""

    def __init__(
        self,
        space: SearchSpace,
        *,
        seed: int = 0,
        population_size: int = 64,
        generations: int = 40,
        crossover: Crossover | None = None,
        mutation: Mutation | None = None,
        cx_prob: float = 0.9,
        mut_prob: float = 0.6,
        select: Callable[..., list[Any]] = tools.selNSGA2,
        select_parents: Callable[..., list[Any]] = tools.selTournamentDCD,
    ) -> None:
        if population_size < 4 or population_size % 4:
            raise ValueError("population_size must be a positive multiple of 4")
        self.space = space
        self.population_size = population_size
        self.generations = generations
        self.crossover = crossover or UniformCrossover()
        self.mutation = mutation or MixedMutation()
        self.cx_prob = cx_prob
        self.mut_prob = mut_prob
        self._select = select
        self._select_parents = select_parents
        sign = 1.0 if space.objective == "throughput_per_gpu" else -1.0
        self._fitness_cls = type("Fitness", (base.Fitness,), {"weights": (sign, -1.0)})
        self._rng = random.Random(seed)
        self._low = [0] * len(space.upper_bounds)
        self._up = list(space.upper_bounds)
        self._state = SearchState()
        self._population: list[_Individual] = []
        self._offspring: list[_Individual] = []
        self._queue: list[tuple[int, ...]] = []  # asked-for genes not yet handed out
        self._seen: dict[tuple[int, ...], Evaluation] = {}

    # ----- ask/tell ------------------------------------------------------------------------
    @property
    def state(self) -> SearchState:
        return self._state

    @property
    def done(self) -> bool:
        return self._state.generation > self.generations

    def ask(self, n: int | None = None) -> list[Candidate]:
        if self.done:
            return []
        if not self._offspring:
            self._offspring = self._breed()
            fresh = (tuple(ind) for ind in self._offspring if tuple(ind) not in self._seen)
            self._queue = list(dict.fromkeys(fresh))
            if not self._queue:
                self._advance()
                return self.ask(n)
        take = self._queue if n is None else self._queue[:n]
        self._queue = self._queue[len(take):]
        cands = [self.space.decode(g) for g in take]
        for c in cands:
            self._state.pending[c.genes] = c
        return cands

    def tell(self, evaluations: list[Evaluation]) -> None:
        for e in evaluations:
            genes = e.candidate.genes
            if genes in self._seen:
                continue
            self._seen[genes] = e
            self._state.pending.pop(genes, None)
            self._state.evaluations.append(e)
        if self._offspring and not self._queue and not self._state.pending:
            self._advance()

    # ----- internals -----------------------------------------------------------------------
    @contextmanager
    def _random(self) -> Iterator[None]:
        """Run DEAP's module-level ``random`` draws on this search's own state."""
        outer = random.getstate()
        random.setstate(self._rng.getstate())
        try:
            yield
        finally:
            self._rng.setstate(random.getstate())
            random.setstate(outer)

    def _individual(self, genes: list[int]) -> _Individual:
        ind = _Individual(genes)
        ind.fitness = self._fitness_cls()
        return ind

    def _breed(self) -> list[_Individual]:
        with self._random():
            if not self._population:
                seen: set[tuple[int, ...]] = set()
                out = []
                limit = min(self.population_size, self.space.size)
                while len(out) < limit:
                    bounds = zip(self._low, self._up, strict=True)
                    genes = [random.randint(lo, hi) for lo, hi in bounds]
                    if tuple(genes) not in seen:
                        seen.add(tuple(genes))
                        out.append(self._individual(genes))
                return out
            parents = self._select_parents(self._population, len(self._population))
            children = [self._individual(list(p)) for p in parents]
            for a, b in zip(children[::2], children[1::2], strict=False):
                if random.random() < self.cx_prob:
                    self.crossover(a, b)
            for child in children:
                if random.random() < self.mut_prob:
                    self.mutation(child, self._low, self._up)
                for i, (lo, hi) in enumerate(zip(self._low, self._up, strict=True)):
                    child[i] = min(max(int(child[i]), lo), hi)  # operators may overshoot
            return children

    def _fitness(self, e: Evaluation) -> tuple[float, float]:
        penalty = e.violation if e.feasible else _INFEASIBLE + e.violation
        if penalty <= 0.0:
            return (e.objective_value(self.space.objective), e.tpot_ms)
        if self.space.objective == "throughput_per_gpu":
            return (-penalty, _WORST * (1.0 + penalty))
        return (_WORST * (1.0 + penalty), _WORST * (1.0 + penalty))

    def _advance(self) -> None:
        for ind in self._offspring:
            ind.fitness.values = self._fitness(self._seen[tuple(ind)])
        pool = self._population + self._offspring
        unique = list({tuple(ind): ind for ind in pool}.values())
        with self._random():
            k = min(self.population_size, len(unique))
            selected = self._select(unique, k)
            if len(selected) % 4:  # DCD tournaments need a multiple of four
                selected += selected[: 4 - len(selected) % 4]
        self._population = selected
        self._offspring = []
        self._state.generation += 1
