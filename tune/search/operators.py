"""Variation operators for integer gene vectors, built on DEAP's, injected into the GA.

Operators draw from Python's ``random`` module (as DEAP's do); :class:`tune.search.nsga2.NSGA2Search`
runs them inside its own seeded random state, so they stay reproducible without touching the
caller's global state.

* :class:`UniformCrossover` swaps each gene between the two parents with probability ``indpb``
  (``deap.tools.cxUniform``); :class:`TwoPointCrossover` swaps a slice (``cxTwoPoint``).
* :class:`UniformIntMutation` redraws each gene uniformly within its bounds with probability
  ``indpb`` (``deap.tools.mutUniformInt``), forcing at least one gene to change so a mutation
  never silently returns its input; :class:`StepMutation` moves a gene one choice up or down
  (neighbouring TP degrees or batch caps), clipped to the bounds.
* :class:`MixedMutation` picks one of two mutations per call: exploration (uniform redraws) and
  exploitation (steps), the GA's default. Coupled genes (replicas and ``max_num_seqs`` set the
  batch together) need the small steps to settle on a constraint boundary.
"""

from __future__ import annotations

import random
from collections.abc import MutableSequence, Sequence
from dataclasses import dataclass
from typing import Protocol

from deap import tools

__all__ = [
    "Crossover",
    "MixedMutation",
    "Mutation",
    "StepMutation",
    "TwoPointCrossover",
    "UniformCrossover",
    "UniformIntMutation",
]

Genes = MutableSequence[int]


class Crossover(Protocol):
    def __call__(self, a: Genes, b: Genes) -> tuple[Genes, Genes]:
        """Recombine ``a`` and ``b`` in place and return them."""
        ...


class Mutation(Protocol):
    def __call__(self, genes: Genes, low: Sequence[int], up: Sequence[int]) -> Genes:
        """Mutate ``genes`` in place within ``[low, up]`` (inclusive) and return them."""
        ...


@dataclass(frozen=True)
class UniformCrossover:
    indpb: float = 0.5

    def __call__(self, a: Genes, b: Genes) -> tuple[Genes, Genes]:
        return tools.cxUniform(a, b, self.indpb)


@dataclass(frozen=True)
class TwoPointCrossover:
    def __call__(self, a: Genes, b: Genes) -> tuple[Genes, Genes]:
        if len(a) < 2:
            return a, b
        return tools.cxTwoPoint(a, b)


@dataclass(frozen=True)
class UniformIntMutation:
    indpb: float = 0.25

    def __call__(self, genes: Genes, low: Sequence[int], up: Sequence[int]) -> Genes:
        before = list(genes)
        (genes,) = tools.mutUniformInt(genes, list(low), list(up), self.indpb)
        if list(genes) == before:
            movable = [i for i in range(len(genes)) if up[i] > low[i]]
            if movable:
                i = random.choice(movable)
                choices = [v for v in range(low[i], up[i] + 1) if v != genes[i]]
                genes[i] = random.choice(choices)
        return genes


@dataclass(frozen=True)
class StepMutation:
    indpb: float = 0.25

    def __call__(self, genes: Genes, low: Sequence[int], up: Sequence[int]) -> Genes:
        changed = False
        for i in range(len(genes)):
            if up[i] > low[i] and random.random() < self.indpb:
                new = min(max(genes[i] + random.choice((-1, 1)), low[i]), up[i])
                changed = changed or new != genes[i]
                genes[i] = new
        if not changed:
            movable = [i for i in range(len(genes)) if up[i] > low[i]]
            if movable:
                i = random.choice(movable)
                genes[i] = genes[i] + 1 if genes[i] < up[i] else genes[i] - 1
        return genes


@dataclass(frozen=True)
class MixedMutation:
    explore: Mutation = UniformIntMutation(indpb=0.2)
    exploit: Mutation = StepMutation(indpb=0.3)
    exploit_prob: float = 0.5

    def __call__(self, genes: Genes, low: Sequence[int], up: Sequence[int]) -> Genes:
        chosen = self.exploit if random.random() < self.exploit_prob else self.explore
        return chosen(genes, low, up)
