"""The examples in the optimizer's docstrings run and print what they claim."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "tune", "tune.catalog.architectures", "tune.bench", "tune.search.deploy", "tune.predict.features", "tune.search.grid",
    "tune.catalog.hardware", "tune.search.nsga2", "tune.search.optimize", "tune.predict.perfdata", "tune.catalog.precision",
    "tune.predict.predictor", "tune.predict.roofline", "tune.predict.estimate", "tune.predict.serving", "tune.predict.schema", "tune.predict.training", "tune.predict.workload",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
