"""The examples in the optimizer's docstrings run and print what they claim."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "tune", "tune.architectures", "tune.bench", "tune.deploy", "tune.features", "tune.grid",
    "tune.hardware", "tune.nsga2", "tune.optimize", "tune.perfdata", "tune.precision",
    "tune.predictor", "tune.roofline", "tune.schema", "tune.training", "tune.workload",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
