"""Step parameters and conditions, templated with sandboxed Jinja.

Templates see ``params`` (the run's parameters) and ``steps`` (``steps.<id>.outputs.<key>``
and ``steps.<id>.status`` of the steps this one depends on, directly or not). The sandbox
(:class:`jinja2.sandbox.ImmutableSandboxedEnvironment`) refuses attribute access to Python
internals and mutation; an undefined name is an error, never an empty string.

A string that is exactly one ``{{ expression }}`` keeps the expression's type (a number stays a
number, a dict a dict); any other string with template syntax renders to a string:

    >>> render({"n": "{{ params.n * 2 }}", "s": "n={{ params.n }}"}, {"params": {"n": 3}})
    {'n': 6, 's': 'n=3'}
    >>> truthy("params.n > 2", {"params": {"n": 3}})
    True
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = ["TemplateError", "references", "render", "truthy"]

_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\{\{|\}\}).)*)\}\}\s*$", re.DOTALL)
_SYNTAX = ("{{", "{%", "{#")


def is_template(value: str) -> bool:
    return any(mark in value for mark in _SYNTAX)


@lru_cache(maxsize=4096)
def _expression(source: str):
    return _ENV.compile_expression(source, undefined_to_none=False)


@lru_cache(maxsize=4096)
def _template(source: str):
    return _ENV.from_string(source)


def render(value: Any, context: dict[str, Any]) -> Any:
    """``value`` with every template string in it (recursively, in lists and dict values) rendered."""
    if isinstance(value, str):
        if not is_template(value):
            return value
        single = _SINGLE_EXPRESSION.match(value)
        if single:
            result = _expression(single["expr"])(**context)
            if isinstance(result, StrictUndefined):  # pragma: no cover - StrictUndefined raises first
                raise TemplateError(f"undefined value in {value!r}")
            return result
        return _template(value).render(**context)
    if isinstance(value, dict):
        return {key: render(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [render(item, context) for item in value]
    return value


def _condition_source(condition: str) -> str:
    single = _SINGLE_EXPRESSION.match(condition)
    return single["expr"] if single else condition


def truthy(condition: str, context: dict[str, Any]) -> bool:
    """Evaluate a condition: a Jinja expression, bare (``params.x > 1``) or in ``{{ }}``."""
    return bool(_expression(_condition_source(condition))(**context))


def references(value: Any, *, condition: bool = False) -> set[tuple[str, str]]:
    """The ``(root, name)`` pairs a template reads, for ``params.<name>`` and ``steps.<name>``.

    Raises :class:`jinja2.TemplateSyntaxError` for a template that does not parse.
    """
    found: set[tuple[str, str]] = set()
    for source in _sources(value, condition=condition):
        for node in source.find_all((nodes.Getattr, nodes.Getitem)):
            base = node.node
            if isinstance(base, nodes.Name) and base.name in ("params", "steps"):
                if isinstance(node, nodes.Getattr):
                    found.add((base.name, node.attr))
                elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                    found.add((base.name, node.arg.value))
    return found


def _sources(value: Any, *, condition: bool) -> list[nodes.Node]:
    if isinstance(value, str):
        if condition:
            return [_ENV.parse("{{ " + _condition_source(value) + " }}")]
        return [_ENV.parse(value)] if is_template(value) else []
    if isinstance(value, dict):
        return [n for item in value.values() for n in _sources(item, condition=False)]
    if isinstance(value, list):
        return [n for item in value for n in _sources(item, condition=False)]
    return []
