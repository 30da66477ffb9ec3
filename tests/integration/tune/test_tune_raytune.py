"""Ray Tune drives the GA: a custom Searcher asks DEAP for candidates, trials run in parallel."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import ray

from tune.search.optimize import optimize
from tune.predict.predictor import Predictor
from tune.search.space import SearchSpace

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SPACE = SearchSpace(
    model="meta-llama/Llama-3.1-8B-Instruct", gpus=("h100_sxm", "l40s"), num_gpus=4, isl=1024,
    osl=256, concurrency=32, slo_ttft_ms=2000, slo_tpot_ms=40, tp=(1, 2), pp=(1,),
    max_num_seqs=(8, 16, 32), precisions=("native",), max_num_batched_tokens=(8192,),
)


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


def test_ray_tune_trials_run_the_ga_and_find_an_slo_meeting_config(
    ray_cluster: None, capsys: pytest.CaptureFixture[str]
):
    predictor = Predictor.load()
    options = {"population_size": 8, "generations": 2}
    result = optimize(SPACE, search="ga", driver="ray", seed=0, predictor=predictor,
                      search_options=options, max_concurrent_trials=2)
    assert capsys.readouterr().out == ""  # Ray Tune reports on stderr: --json stays clean
    assert result.driver == "ray" and result.best is not None and result.best.meets_slo
    assert result.evaluated > 8  # the initial population plus bred generations
    # the same search in-process asks for the same candidates, so it finds the same best
    local = optimize(SPACE, search="ga", seed=0, predictor=predictor, search_options=options)
    assert local.best.candidate == result.best.candidate
    assert local.evaluated == result.evaluated
