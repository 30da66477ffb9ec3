"""Search: operators that really change genes, ask/tell determinism, grid, constraints."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from tune.search.asktell import best_of, pareto_front
from tune.search.grid import GridSearch
from tune.search.nsga2 import NSGA2Search
from tune.search.operators import (
    MixedMutation,
    StepMutation,
    TwoPointCrossover,
    UniformCrossover,
    UniformIntMutation,
)
from tune.search.optimize import drive
from tune.search.space import Candidate, Evaluation, SearchSpace

SPACE = SearchSpace(
    model="meta-llama/Llama-3.1-8B-Instruct", gpus=("h100_sxm", "l40s", "a100_sxm_80gb"),
    num_gpus=8, isl=1024, osl=256, concurrency=64, slo_ttft_ms=1000, slo_tpot_ms=30,
)


def fake_evaluate(candidates: list[Candidate]) -> list[Evaluation]:
    """A seeded stand-in for the predictor: throughput peaks at known genes, TPOT trades off.

    Throughput is maximal at genes (1, 2, 0, 3, 9, 0, 2); TPOT grows with max_num_seqs so the
    two objectives conflict; tp > replicas breaks a pretend memory constraint.
    """
    target = (1, 2, 0, 3, 9, 0, 2)
    out = []
    for c in candidates:
        distance = sum(abs(a - b) for a, b in zip(c.genes, target, strict=True))
        tpot = 5.0 + c.genes[4]
        out.append(Evaluation(
            candidate=c, feasible=c.genes[1] <= c.genes[3] + 1, reason="",
            batch_per_replica=8, ttft_ms=100.0, tpot_ms=tpot, e2e_ms=100 + 255 * tpot,
            output_tps_per_gpu=1000.0 - 10.0 * distance, output_tps_total=1.0,
            cost_per_million_tokens_usd=1.0 + distance, gpus_used=1,
            violation=max(tpot / 30.0 - 1.0, 0.0), max_concurrency_per_replica=64,
        ))
    return out


def test_uniform_crossover_swaps_genes_between_parents():
    random.seed(1)
    changed = 0
    for _ in range(50):
        a, b = [0, 0, 0, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6, 7]
        x, y = UniformCrossover(indpb=0.5)(list(a), list(b))
        for i in range(7):
            assert {x[i], y[i]} == {a[i], b[i]}  # genes move, none is invented
        changed += x != a
    assert changed >= 45


def test_two_point_crossover_exchanges_a_slice():
    random.seed(2)
    x, y = TwoPointCrossover()([0] * 7, [9] * 7)
    assert x != [0] * 7 and sorted(x + y) == sorted([0] * 7 + [9] * 7)


@pytest.mark.parametrize(
    "mutation", [UniformIntMutation(indpb=0.2), StepMutation(indpb=0.2), MixedMutation()]
)
def test_mutation_changes_genes_within_bounds(mutation):
    random.seed(3)
    low, up = [0] * 7, [2, 3, 1, 7, 14, 1, 3]
    for _ in range(300):
        genes = [random.randint(lo, hi) for lo, hi in zip(low, up, strict=True)]
        out = mutation(list(genes), low, up)
        assert out != genes
        assert all(lo <= g <= hi for g, lo, hi in zip(out, low, up, strict=True))
        if isinstance(mutation, StepMutation):
            assert max(abs(a - b) for a, b in zip(out, genes, strict=True)) == 1


def test_same_seed_same_proposals_other_seed_other_proposals():
    def run(seed: int) -> list[tuple[int, ...]]:
        search = NSGA2Search(SPACE, seed=seed, population_size=16, generations=5)
        asked = []
        while not search.done:
            batch = search.ask()
            asked += [c.genes for c in batch]
            search.tell(fake_evaluate(batch))
        return asked

    state_before = random.getstate()
    assert run(7) == run(7)
    assert run(7) != run(8)
    assert random.getstate() == state_before  # the caller's random stream is untouched


def test_ask_tell_accepts_results_in_pieces_and_any_order():
    search = NSGA2Search(SPACE, seed=0, population_size=16, generations=3)
    batch = search.ask()
    assert len(batch) == 16 and search.ask() == []  # waits for the generation's results
    results = fake_evaluate(batch)
    search.tell(results[8:])
    assert search.state.generation == 0 and len(search.state.pending) == 8
    search.tell(results[:8][::-1])
    assert search.state.generation == 1 and not search.state.pending
    assert search.ask(4) and len(search.state.pending) == 4


def test_ga_finds_the_optimum_of_a_known_landscape():
    search = NSGA2Search(SPACE, seed=0, population_size=32, generations=30)
    best = best_of(drive(search, fake_evaluate).evaluations, "throughput_per_gpu")
    assert best is not None and best.candidate.genes == (1, 2, 0, 3, 9, 0, 2)
    assert len(search.state.evaluations) < SPACE.size / 20


def test_custom_operators_are_used():
    calls = {"cx": 0, "mut": 0}

    def crossover(a, b):
        calls["cx"] += 1
        return UniformCrossover()(a, b)

    def mutation(genes, low, up):
        calls["mut"] += 1
        return StepMutation()(genes, low, up)

    search = NSGA2Search(SPACE, seed=0, population_size=16, generations=2,
                         crossover=crossover, mutation=mutation)
    drive(search, fake_evaluate)
    assert calls["cx"] > 0 and calls["mut"] > 0


def test_grid_enumerates_every_point_once_and_its_best_is_the_brute_force_best():
    space = SPACE.model_copy(update={"gpus": ("h100_sxm",), "num_gpus": 4,
                                     "max_num_seqs": (8, 16, 32), "max_num_batched_tokens": (8192,)})
    state = drive(GridSearch(space, batch_size=7), fake_evaluate)
    genes = [e.candidate.genes for e in state.evaluations]
    assert len(genes) == len(set(genes)) == space.size
    brute = best_of(fake_evaluate([space.decode(g) for g in space.grid()]), "throughput_per_gpu")
    assert state.best("throughput_per_gpu") == brute


def test_pareto_front_is_non_dominated_and_sorted():
    evals = fake_evaluate([SPACE.decode(g) for g in SPACE.grid()[:4000]])
    front = pareto_front(evals, "throughput_per_gpu")
    assert front and all(e.meets_slo for e in front)
    for a, b in zip(front, front[1:], strict=False):
        assert a.output_tps_per_gpu >= b.output_tps_per_gpu and a.tpot_ms > b.tpot_ms


def test_best_falls_back_to_the_candidate_closest_to_the_slos():
    evals = fake_evaluate([SPACE.decode((0, 0, 0, 0, 14, 0, 0)), SPACE.decode((0, 0, 0, 0, 13, 0, 0))])
    evals = [replace(e, violation=v) for e, v in zip(evals, (0.5, 0.2), strict=True)]
    assert best_of(evals, "cost").candidate.genes == (0, 0, 0, 0, 13, 0, 0)


def test_decode_checks_bounds():
    c = SPACE.decode((0, 3, 1, 7, 14, 1, 3))
    assert (c.gpu, c.tp, c.pp, c.replicas, c.max_num_seqs, c.precision) == (
        "h100_sxm", 8, 2, 8, 512, "fp8")
    with pytest.raises(Exception, match="outside the space"):
        SPACE.decode((0, 4, 0, 0, 0, 0, 0))
