"""Search: the deployment space, ask/tell algorithms, their drivers and the deployment spec.

Import order (each module imports only those above it, and ``tune.predict``/``tune.catalog``)::

    space      candidates, constraints and their vectorised evaluation with a predictor
    asktell    the ask/tell protocol and its typed state
    operators  crossover and mutation, injected into the GA
    nsga2      NSGA-II (DEAP) behind ask/tell
    grid       exhaustive search behind ask/tell
    deploy     a chosen configuration -> vLLM engine args and Ray Serve options
    raytune    Ray Tune as a driver (one trial per candidate)
    optimize   the front door: search a space, or choose among given candidates

Names are imported lazily so ``import tune.search`` does not start Ray or DEAP.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SearchSpace": "tune.search.space",
    "Candidate": "tune.search.space",
    "Evaluation": "tune.search.space",
    "Evaluator": "tune.search.space",
    "AskTell": "tune.search.asktell",
    "SearchState": "tune.search.asktell",
    "NSGA2Search": "tune.search.nsga2",
    "GridSearch": "tune.search.grid",
    "deployment_spec": "tune.search.deploy",
    "optimize": "tune.search.optimize",
    "choose_candidate": "tune.search.optimize",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tune.search' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
