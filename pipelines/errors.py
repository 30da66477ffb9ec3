"""Errors of the pipelines package.

Each error knows its HTTP status and a machine-readable ``code``; the control API renders
them in its one error shape (``control.pipelines_api`` maps them onto ``control.errors``)::

    PipelineError (500)
    ├── DefinitionError (400)   a definition that cannot run: ``param`` names the step and key
    ├── InvalidParams (400)     run parameters that do not match the definition
    ├── NotFound (404)          unknown pipeline, run, or event name
    ├── Conflict (409)          a state change that lost to another one (optimistic locking)
    └── ExecutorUnavailable (503)  the executor does not answer

:class:`ActionError` is different: an action raises it to fail a step, and the step's retry
policy decides what happens next (``retryable=False`` ends the step at once).
"""

from __future__ import annotations

from typing import ClassVar


class PipelineError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message, param)
        self.message = message
        self.param = param

    def __str__(self) -> str:
        return self.message


class DefinitionError(PipelineError):
    status = 400
    code = "invalid_definition"


class InvalidParams(PipelineError):
    status = 400
    code = "invalid_params"


class NotFound(PipelineError):
    status = 404
    code = "not_found"


class Conflict(PipelineError):
    status = 409
    code = "conflict"


class ExecutorUnavailable(PipelineError):
    status = 503
    code = "pipelines_unavailable"


class ActionError(Exception):
    """A step attempt failed. ``retryable``: whether the retry policy may try again."""

    def __init__(self, message: str, retryable: bool = True) -> None:
        super().__init__(message, retryable)
        self.message = message
        self.retryable = retryable

    def __str__(self) -> str:
        return self.message
