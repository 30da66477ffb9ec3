"""Old module paths of ``tune`` (before the catalog/predict/search split) keep importing.

``from tune.predictor import Predictor`` and ``import tune.space`` still work: an import hook
maps each old path to a module that reads every name from the new module(s). The old paths
are for code written against the flat layout; new code imports from ``tune.catalog``,
``tune.predict`` and ``tune.search`` (or the names ``tune`` itself exports).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
from typing import Any

__all__ = ["MOVED", "install"]

# old path -> new modules, searched in order
MOVED: dict[str, tuple[str, ...]] = {
    "tune.hardware": ("tune.catalog.hardware",),
    "tune.architectures": ("tune.catalog.architectures",),
    "tune.precision": ("tune.catalog.precision",),
    "tune.schema": ("tune.predict.schema",),
    "tune.workload": ("tune.predict.workload",),
    "tune.roofline": ("tune.predict.roofline", "tune.predict.estimate"),
    "tune.features": ("tune.predict.features",),
    "tune.calibration": ("tune.predict.calibration",),
    "tune.predictor": ("tune.predict.predictor",),
    "tune.training": ("tune.predict.training",),
    "tune.perfdata": ("tune.predict.perfdata",),
    "tune.space": ("tune.search.space",),
    "tune.asktell": ("tune.search.asktell",),
    "tune.nsga2": ("tune.search.nsga2",),
    "tune.operators": ("tune.search.operators",),
    "tune.grid": ("tune.search.grid",),
    "tune.raytune": ("tune.search.raytune",),
    "tune.optimize": ("tune.search.optimize",),
    "tune.deploy": ("tune.search.deploy",),
}


# old paths that are also the name of a function ``tune`` exports: importing the old path sets
# ``tune.<name>`` to the module, so the module stays callable as that function
CALLABLE = {"tune.optimize": "optimize", "tune.roofline": "roofline"}


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self, CALLABLE[self.__name__])(*args, **kwargs)


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec: Any) -> types.ModuleType:
        targets = [importlib.import_module(name) for name in MOVED[spec.name]]
        kind = _CallableModule if spec.name in CALLABLE else types.ModuleType
        module = kind(spec.name, f"Moved: see {', '.join(MOVED[spec.name])}.")
        module.__all__ = [n for t in targets for n in getattr(t, "__all__", [])]

        def __getattr__(name: str) -> Any:  # noqa: N807 (PEP 562 module attribute hook)
            for t in targets:
                if hasattr(t, name):
                    return getattr(t, name)
            raise AttributeError(f"module {spec.name!r} has no attribute {name!r}")

        module.__getattr__ = __getattr__  # type: ignore[method-assign]
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        return None


def install() -> None:
    """Add the hook once (``import tune`` does)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())
