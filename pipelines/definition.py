"""A pipeline definition: parameters, settings and a DAG of steps.

The same model is read from YAML or JSON (:mod:`pipelines.loader`) or built in Python::

    PipelineDefinition(
        name="hello",
        parameters={"who": ParameterSpec(type="string", default="world")},
        steps=[
            StepDefinition(id="greet", action="set_output", params={"text": "hi {{ params.who }}"}),
            StepDefinition(id="say", action="log", params={"message": "{{ steps.greet.outputs.text }}"},
                           depends_on=["greet"]),
        ],
    )

:func:`check_definition` then refuses what cannot run, naming the step and the key: cycles,
unknown actions, unknown step or parameter references (templates may only read steps the
step depends on, directly or not), unknown keys in an action's params.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any, Literal

from jinja2 import TemplateSyntaxError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipelines import templating
from pipelines.actions import ActionRegistry
from pipelines.errors import DefinitionError, InvalidParams

__all__ = [
    "ParameterSpec",
    "PipelineDefinition",
    "PipelineSettings",
    "RetryPolicy",
    "StepDefinition",
    "check_definition",
    "parse_definition",
    "resolve_params",
]

STEP_ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
ParamType = Literal["string", "integer", "number", "boolean", "object"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParameterSpec(_Strict):
    type: ParamType = "string"
    default: Any = None
    required: bool = False
    description: str = ""


class RetryPolicy(_Strict):
    """Attempt ``n`` (n >= 1) that fails waits ``min(backoff_s * multiplier**(n-1), max_delay_s)``,
    scaled by a random factor in ``[1 - jitter, 1 + jitter]`` seeded by the run, step and attempt
    (so a recovered run waits the same), then tries again, up to ``max_attempts`` in all."""

    max_attempts: int = Field(default=1, ge=1, le=100)
    backoff_s: float = Field(default=1.0, ge=0)
    multiplier: float = Field(default=2.0, ge=1)
    max_delay_s: float = Field(default=60.0, ge=0)
    jitter: float = Field(default=0.1, ge=0, le=1)

    def delay_s(self, attempt: int, seed: str) -> float:
        base = min(self.backoff_s * self.multiplier ** (attempt - 1), self.max_delay_s)
        rng = random.Random(hashlib.sha256(f"{seed}:{attempt}".encode()).digest())
        return max(0.0, base * (1 + self.jitter * (2 * rng.random() - 1)))


class PipelineSettings(_Strict):
    timeout_s: float | None = Field(default=None, gt=0, description="the whole run; then running steps are cancelled")
    fail_fast: bool = Field(default=True, description="a failed step cancels running siblings")
    max_parallel_steps: int = Field(default=16, ge=1, le=1000)
    retry: RetryPolicy = RetryPolicy()


class StepDefinition(_Strict):
    id: str = Field(pattern=STEP_ID_PATTERN)
    action: str
    params: dict[str, Any] = {}
    depends_on: list[str] = []
    condition: str | None = Field(default=None, description="a Jinja expression; false skips the step")
    on_failure: Literal["fail", "continue"] = "fail"
    timeout_s: float | None = Field(default=None, gt=0, description="per attempt")
    retry: RetryPolicy | None = None
    weight: float = Field(default=1.0, gt=0, description="share of the run's progress")
    run_on: Literal["executor", "ray"] = Field(
        default="executor", description="where each attempt runs: the executor's process, or a Ray task (if Ray runs)"
    )
    description: str = ""


class PipelineDefinition(_Strict):
    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    parameters: dict[str, ParameterSpec] = {}
    settings: PipelineSettings = PipelineSettings()
    steps: list[StepDefinition] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> PipelineDefinition:
        seen: set[str] = set()
        for step in self.steps:
            if step.id in seen:
                raise ValueError(f"steps.{step.id}.id: duplicate step id {step.id!r}")
            seen.add(step.id)
        return self

    def step(self, step_id: str) -> StepDefinition:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    def topological_order(self) -> list[StepDefinition]:
        """Steps so that each comes after its dependencies; ties keep the written order."""
        done: set[str] = set()
        order: list[StepDefinition] = []
        remaining = list(self.steps)
        while remaining:
            ready = [s for s in remaining if all(d in done for d in s.depends_on)]
            if not ready:
                raise DefinitionError("the steps' depends_on form a cycle", param="steps")
            for step in ready:
                order.append(step)
                done.add(step.id)
            remaining = [s for s in remaining if s.id not in done]
        return order

    def ancestors(self, step_id: str) -> set[str]:
        by_id = {s.id: s for s in self.steps}
        seen: set[str] = set()
        stack = list(by_id[step_id].depends_on)
        while stack:
            current = stack.pop()
            if current not in seen and current in by_id:
                seen.add(current)
                stack.extend(by_id[current].depends_on)
        return seen

    def leaves(self) -> list[str]:
        needed = {d for s in self.steps for d in s.depends_on}
        return [s.id for s in self.steps if s.id not in needed]


def parse_definition(data: Any, registry: ActionRegistry) -> PipelineDefinition:
    """Validate a definition given as plain data (parsed YAML/JSON) and check it can run."""
    if isinstance(data, PipelineDefinition):
        definition = data
    else:
        if not isinstance(data, dict):
            raise DefinitionError("a pipeline definition is a mapping with name and steps", param=None)
        try:
            definition = PipelineDefinition.model_validate(data)
        except ValidationError as exc:
            raise _definition_error(exc, data) from None
    check_definition(definition, registry)
    return definition


def check_definition(definition: PipelineDefinition, registry: ActionRegistry) -> None:
    """Refuse what cannot run; the error's ``param`` is ``steps.<id>.<key>``."""
    ids = {s.id for s in definition.steps}
    for step in definition.steps:
        for dep in step.depends_on:
            if dep not in ids:
                _fail(step.id, "depends_on", f"unknown step {dep!r} (steps: {', '.join(sorted(ids))})")
            if dep == step.id:
                _fail(step.id, "depends_on", "a step cannot depend on itself")
    _check_cycles(definition)
    for step in definition.steps:
        if step.action not in registry:
            _fail(step.id, "action", f"unknown action {step.action!r} (known: {', '.join(registry.names())})")
        spec = registry.get(step.action)
        if step.run_on == "ray" and spec.kind == "wait":
            _fail(step.id, "run_on", f"action {step.action!r} is a durable wait kept by the executor; only task actions run on Ray")
        problem = spec.check_keys(step.params)
        if problem:
            _fail(step.id, f"params.{problem[0]}", problem[1])
        ancestors = definition.ancestors(step.id)
        for key, value, is_condition in [
            *((f"params.{k}", v, False) for k, v in step.params.items()),
            *((("condition", step.condition, True),) if step.condition else ()),
        ]:
            try:
                refs = templating.references(value, condition=is_condition)
            except TemplateSyntaxError as exc:
                _fail(step.id, key, f"template syntax error: {exc.message}")
            for root, name in sorted(refs):
                if root == "params" and name not in definition.parameters:
                    _fail(step.id, key, f"unknown parameter {name!r} (declared: {', '.join(definition.parameters) or 'none'})")
                if root == "steps":
                    if name not in ids:
                        _fail(step.id, key, f"unknown step {name!r}")
                    if name not in ancestors:
                        _fail(step.id, key, f"reads step {name!r}, which it does not depend on (add it to depends_on)")


def resolve_params(definition: PipelineDefinition, given: dict[str, Any]) -> dict[str, Any]:
    """The run's parameters: ``given`` checked against the declared types, defaults filled in.
    Strings from a command line (``--param n=3``) are converted to the declared type."""
    unknown = sorted(set(given) - set(definition.parameters))
    if unknown:
        raise InvalidParams(
            f"unknown parameter {unknown[0]!r} (declared: {', '.join(definition.parameters) or 'none'})",
            param=f"params.{unknown[0]}",
        )
    resolved: dict[str, Any] = {}
    for name, spec in definition.parameters.items():
        if name in given:
            resolved[name] = _coerce(name, spec.type, given[name])
        elif spec.required:
            raise InvalidParams(f"missing required parameter {name!r}", param=f"params.{name}")
        else:
            resolved[name] = spec.default
    return resolved


def _coerce(name: str, kind: str, value: Any) -> Any:
    def bad() -> InvalidParams:
        return InvalidParams(f"parameter {name!r} must be {kind}, got {value!r}", param=f"params.{name}")

    if kind == "string":
        if not isinstance(value, str):
            raise bad()
        return value
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise bad()
    if kind == "integer":
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                raise bad() from None
        raise bad()
    if kind == "number":
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, (int, float)):
            return value
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad() from None
        raise bad()
    if isinstance(value, str):  # object
        import json

        try:
            value = json.loads(value)
        except ValueError:
            raise bad() from None
    if not isinstance(value, (dict, list)):
        raise bad()
    return value


def _check_cycles(definition: PipelineDefinition) -> None:
    deps = {s.id: s.depends_on for s in definition.steps}
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in deps[node]:
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep] if dep in path else [node, dep]
                _fail(node, "depends_on", f"cycle: {' -> '.join(cycle)}")
            if state.get(dep) is None:
                visit(dep, [*path, dep])
        state[node] = 2

    for step in definition.steps:
        if step.id not in state:
            visit(step.id, [step.id])


def _fail(step_id: str, key: str, problem: str):
    raise DefinitionError(f"steps.{step_id}.{key}: {problem}", param=f"steps.{step_id}.{key}")


def _definition_error(exc: ValidationError, data: dict) -> DefinitionError:
    error = exc.errors()[0]
    loc = list(error["loc"])
    steps = data.get("steps") if isinstance(data, dict) else None
    if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int) and isinstance(steps, list):
        item = steps[loc[1]] if loc[1] < len(steps) else None
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            loc[1] = item["id"]
    key = ".".join(str(p) for p in loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        message = "unknown key"
    elif kind == "missing":
        message = "missing key"
    else:
        message = str(error.get("ctx", {}).get("error", error["msg"])).removeprefix("Value error, ")
    if kind == "value_error" and message.startswith("steps."):
        key, _, message = message.partition(": ")
    return DefinitionError(f"{key}: {message}" if key else message, param=key or None)
