"""Errors raised by the optimizer.

    TuneError                    base: the message is safe to show a user as is
     ├── UnknownModel            a model id that is neither in the catalog nor a config.json
     ├── UnknownGPU              a GPU system name that is not in the catalog
     ├── InvalidModelConfig      a config.json the architecture cannot be read from
     ├── InvalidInput            a bad input row or argument (names the row or the option)
     ├── DataError               training data missing or malformed
     ├── ArtifactError           predictor artifacts missing or of another version
     ├── NoFeasibleConfig        nothing in the search space fits in memory or the GPU budget
     └── BenchError              the load generator could not measure the endpoint

Each error has a stable ``code`` (for JSON output and the control API to map).
"""

from __future__ import annotations

__all__ = [
    "ArtifactError",
    "BenchError",
    "DataError",
    "InvalidInput",
    "InvalidModelConfig",
    "NoFeasibleConfig",
    "TuneError",
    "UnknownGPU",
    "UnknownModel",
]


class TuneError(Exception):
    """Base class of every optimizer error."""

    code = "tune_error"


class UnknownModel(TuneError):
    code = "unknown_model"

    def __init__(self, model: str, *, where: str | None = None) -> None:
        self.model = model
        self.where = where
        prefix = f"{where}: " if where else ""
        super().__init__(
            f"{prefix}unknown model {model!r}: not in the built-in catalog and not a path to a "
            "Hugging Face config.json (or a directory holding one)"
        )


class UnknownGPU(TuneError):
    code = "unknown_gpu"

    def __init__(self, gpu: str, *, known: list[str], where: str | None = None) -> None:
        self.gpu = gpu
        self.known = known
        self.where = where
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}unknown GPU system {gpu!r}; known: {', '.join(known)}")


class InvalidModelConfig(TuneError):
    code = "invalid_model_config"


class InvalidInput(TuneError):
    code = "invalid_input"


class DataError(TuneError):
    code = "data_error"


class ArtifactError(TuneError):
    code = "artifact_error"


class NoFeasibleConfig(TuneError):
    code = "no_feasible_config"


class BenchError(TuneError):
    code = "bench_error"
