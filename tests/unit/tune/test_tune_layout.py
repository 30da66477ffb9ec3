"""The catalog -> predict -> search layout: old flat module paths still import, no circle."""

from __future__ import annotations

import importlib

import pytest

from tune._moved import MOVED


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_module_paths_still_import_their_names(old: str):
    module = importlib.import_module(old)
    for new in MOVED[old]:
        target = importlib.import_module(new)
        for name in target.__all__:
            assert getattr(module, name) is getattr(target, name)


def test_old_style_from_imports_work():
    from tune.optimize import choose_candidate  # noqa: F401 (the import is the test)
    from tune.predictor import ARTIFACT_DIR, Predictor
    from tune.roofline import estimate, roofline  # noqa: F401
    from tune.space import SearchSpace

    from tune.predict.predictor import Predictor as NewPredictor
    from tune.search.space import SearchSpace as NewSpace

    assert Predictor is NewPredictor and SearchSpace is NewSpace
    assert (ARTIFACT_DIR / "metadata.json").is_file()


def test_unknown_name_on_an_old_path_is_an_attribute_error():
    module = importlib.import_module("tune.hardware")
    with pytest.raises(AttributeError, match="no_such_name"):
        module.no_such_name  # noqa: B018


def test_public_names_of_tune_resolve():
    import tune

    for name in tune.__all__:
        assert getattr(tune, name) is not None


def test_subpackage_front_doors_resolve():
    for package in ("tune.catalog", "tune.predict", "tune.search"):
        module = importlib.import_module(package)
        for name in module.__all__:
            assert getattr(module, name) is not None


def test_importing_an_old_path_keeps_the_same_named_function_callable():
    import tune
    import tune.optimize  # sets tune.optimize to the old-path module  # noqa: F401
    from tune.search.space import SearchSpace

    space = SearchSpace(model="Qwen/Qwen3-8B", gpus=("h100_sxm",), num_gpus=1, isl=512, osl=128,
                        concurrency=4, slo_ttft_ms=5000, slo_tpot_ms=100, tp=(1,), pp=(1,),
                        max_num_seqs=(4,), precisions=("native",), max_num_batched_tokens=(8192,))
    assert tune.optimize(space, search="grid").best is not None
