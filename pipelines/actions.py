"""The action registry: what a pipeline step can do.

An action is an async function ``(ctx, params) -> outputs``: ``params`` are the step's rendered
parameters, the returned dict (JSON values) becomes ``steps.<id>.outputs``. It fails the step by
raising :class:`~pipelines.errors.ActionError` (any other exception counts as a retryable
failure). Registering one is one line, from any package, before the executor starts::

    from pipelines import register_action

    async def cluster_health(ctx, params):
        await ctx.progress(50)
        return {"healthy": True}

    register_action("cluster_health", cluster_health)

Actions that change the world send ``ctx.idempotency_key`` (``<run id>:<step id>``, the same on
every attempt and after a crash) so the other side can deduplicate: the executor runs a step
at least once.

``params`` may name a pydantic model: the loader then refuses unknown and missing keys at
load time (naming the step and key), and the executor validates the rendered values before
calling the action. ``kind="wait"`` marks the built-in waiting actions (``sleep``,
``wait_until``, ``wait_for_event``), which the executor runs itself as durable waits.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ValidationError

from pipelines.errors import ActionError

if TYPE_CHECKING:
    import httpx

__all__ = ["Action", "ActionContext", "ActionRegistry", "ActionSpec", "default_registry", "register_action"]

Action = Callable[["ActionContext", dict[str, Any]], Awaitable[dict[str, Any] | None]]


@dataclass
class ActionContext:
    """What an action knows about the attempt it runs in."""

    run_id: str
    step_id: str
    attempt: int
    http: httpx.AsyncClient
    report: Callable[[float], Awaitable[None]] = field(repr=False)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("pipelines.actions"), repr=False)

    @property
    def idempotency_key(self) -> str:
        """``<run id>:<step id>``: the same on every attempt of the step, and after a crash."""
        return f"{self.run_id}:{self.step_id}"

    async def progress(self, percent: float) -> None:
        """Report how far along the step is (0-100); the run's progress never goes backwards."""
        await self.report(max(0.0, min(100.0, float(percent))))


@dataclass(frozen=True)
class ActionSpec:
    name: str
    fn: Action | None
    params: type[BaseModel] | None = None
    kind: Literal["task", "wait"] = "task"
    description: str = ""

    def validate(self, params: dict[str, Any]) -> dict[str, Any]:
        """Rendered params, checked against the action's model (an :class:`ActionError` naming
        the key if they do not fit)."""
        if self.params is None:
            return params
        try:
            return self.params.model_validate(params).model_dump(exclude_unset=False)
        except ValidationError as exc:
            first = exc.errors()[0]
            key = ".".join(str(p) for p in first["loc"]) or "params"
            raise ActionError(f"params.{key}: {first['msg']}", retryable=False) from None

    async def run(self, ctx: ActionContext, params: dict[str, Any]) -> dict[str, Any]:
        """One attempt: the action's outputs as JSON values, or an :class:`ActionError` (another
        exception becomes a retryable one naming it). The same wherever the attempt runs."""
        try:
            outputs = await self.fn(ctx, params)
        except ActionError:
            raise
        except Exception as exc:  # an action's own bug or a library error: retryable, named
            raise ActionError(f"{type(exc).__name__}: {exc}") from None
        outputs = {} if outputs is None else outputs
        if not isinstance(outputs, dict):
            raise ActionError(f"action {self.name!r} returned {type(outputs).__name__}, not a dict", retryable=False)
        try:
            return json.loads(json.dumps(outputs))
        except (TypeError, ValueError) as exc:
            raise ActionError(f"action {self.name!r} returned outputs that are not JSON: {exc}", retryable=False) from None

    def check_keys(self, params: dict[str, Any]) -> tuple[str, str] | None:
        """At load time: ``(key, problem)`` for the first unknown or missing key, else None."""
        if self.params is None:
            return None
        fields = self.params.model_fields
        forbid = self.params.model_config.get("extra") == "forbid"
        for key in params:
            if forbid and key not in fields and not any(f.alias == key for f in fields.values()):
                return key, f"unknown key for action '{self.name}' (valid: {', '.join(fields)})"
        for name, info in fields.items():
            if info.is_required() and name not in params and (info.alias or name) not in params:
                return name, f"missing key for action '{self.name}'"
        return None


class ActionRegistry:
    """Actions by name. ``register`` works as a call or as a decorator."""

    def __init__(self) -> None:
        self._actions: dict[str, ActionSpec] = {}

    def register(
        self,
        name: str,
        fn: Action | None = None,
        *,
        params: type[BaseModel] | None = None,
        kind: Literal["task", "wait"] = "task",
        description: str = "",
        replace: bool = False,
    ):
        def add(func: Action | None):
            if name in self._actions and not replace and self._actions[name].fn is not func:
                raise ValueError(f"action {name!r} is already registered")
            doc = description
            if not doc and func is not None and func.__doc__:
                doc = func.__doc__.strip().splitlines()[0]
            self._actions[name] = ActionSpec(name, func, params, kind, doc)
            return func

        if fn is None and kind == "task":
            return add
        return add(fn)

    def get(self, name: str) -> ActionSpec:
        return self._actions[name]

    def __contains__(self, name: object) -> bool:
        return name in self._actions

    def names(self) -> list[str]:
        return sorted(self._actions)

    def specs(self) -> list[ActionSpec]:
        return [self._actions[n] for n in self.names()]


default_registry = ActionRegistry()


def register_action(
    name: str,
    fn: Action | None = None,
    *,
    params: type[BaseModel] | None = None,
    description: str = "",
    replace: bool = False,
):
    """Add an action to the default registry (the one ``foundry up``'s executor uses)."""
    return default_registry.register(name, fn, params=params, description=description, replace=replace)
