"""Durable DAG pipelines: parallel steps, retries with backoff, conditions, events, progress,
cancellation and crash-resume, executed by DBOS Transact (SQLite or PostgreSQL).

    definition  the model (parameters, settings, steps) and its checks
    loader      YAML/JSON files and text -> a checked definition
    templating  sandboxed Jinja for step params and conditions
    actions     the action registry (``register_action``) and the context actions get
    builtin_actions  log, set_output, transform, fail, sleep, wait_until, wait_for_event, http_request
    store       the runs' view for the API, versioned for optimistic locking
    engine      the executor: runs and steps as DBOS workflows
    dispatch    ``run_on: ray`` steps: each attempt a Ray task (no Ray retries; DBOS retries)
    actor       the executor as a Ray actor, and the client the control API holds

Example:
    >>> from pipelines import load_text
    >>> d = load_text('''
    ... name: hello
    ... parameters: {who: {type: string, default: world}}
    ... steps:
    ...   - {id: greet, action: set_output, params: {text: "hi {{ params.who }}"}}
    ...   - {id: say, action: log, params: {message: "{{ steps.greet.outputs.text }}"}, depends_on: [greet]}
    ... ''')
    >>> [s.id for s in d.topological_order()]
    ['greet', 'say']
"""

from pipelines.actions import ActionContext, ActionRegistry, ActionSpec, default_registry, register_action
from pipelines.builtin_actions import register_builtins
from pipelines.definition import (
    ParameterSpec,
    PipelineDefinition,
    PipelineSettings,
    RetryPolicy,
    StepDefinition,
    check_definition,
    parse_definition,
    resolve_params,
)
from pipelines.errors import (
    ActionError,
    Conflict,
    DefinitionError,
    ExecutorUnavailable,
    InvalidParams,
    NotFound,
    PipelineError,
)
from pipelines.loader import load_file, load_text, read_file

register_builtins(default_registry)

__all__ = [
    "ActionContext",
    "ActionError",
    "ActionRegistry",
    "ActionSpec",
    "Conflict",
    "DefinitionError",
    "ExecutorUnavailable",
    "InvalidParams",
    "NotFound",
    "ParameterSpec",
    "PipelineDefinition",
    "PipelineError",
    "PipelineSettings",
    "RetryPolicy",
    "StepDefinition",
    "check_definition",
    "default_registry",
    "load_file",
    "load_text",
    "parse_definition",
    "read_file",
    "register_action",
    "resolve_params",
]
