"""Definitions: loading from YAML/JSON and Python, and refusing what cannot run, naming the
step and the key. Templating is sandboxed."""

from __future__ import annotations

import json

import pytest

from pipelines import (
    DefinitionError,
    InvalidParams,
    PipelineDefinition,
    RetryPolicy,
    StepDefinition,
    default_registry,
    load_file,
    load_text,
    parse_definition,
    resolve_params,
)
from pipelines.templating import TemplateError, render, truthy

GOOD = """
name: deploy
parameters:
  model: {type: string, required: true}
  replicas: {type: integer, default: 1}
settings: {max_parallel_steps: 4, retry: {max_attempts: 3, backoff_s: 0.5}}
steps:
  - id: plan
    action: set_output
    params: {replicas: "{{ params.replicas }}"}
  - id: check
    action: http_request
    params: {url: "http://127.0.0.1:1/health"}
    retry: {max_attempts: 5}
  - id: announce
    action: log
    depends_on: [plan, check]
    condition: "steps.plan.outputs.replicas > 0"
    params: {message: "{{ params.model }} x {{ steps.plan.outputs.replicas }}"}
"""


def bad(text_or_data) -> DefinitionError:
    with pytest.raises(DefinitionError) as info:
        if isinstance(text_or_data, str):
            load_text(text_or_data)
        else:
            parse_definition(text_or_data, default_registry)
    return info.value


def steps_of(*steps: dict) -> dict:
    return {"name": "p", "steps": list(steps)}


def test_yaml_json_and_python_give_the_same_definition(tmp_path):
    from_yaml = load_text(GOOD)
    path = tmp_path / "deploy.json"
    path.write_text(json.dumps(from_yaml.model_dump(mode="json", by_alias=True)))
    assert load_file(path) == from_yaml
    built = PipelineDefinition(
        name="deploy",
        parameters=from_yaml.parameters,
        settings=from_yaml.settings,
        steps=[
            StepDefinition(id="plan", action="set_output", params={"replicas": "{{ params.replicas }}"}),
            StepDefinition(id="check", action="http_request", params={"url": "http://127.0.0.1:1/health"},
                           retry=RetryPolicy(max_attempts=5)),
            StepDefinition(id="announce", action="log", depends_on=["plan", "check"],
                           condition="steps.plan.outputs.replicas > 0",
                           params={"message": "{{ params.model }} x {{ steps.plan.outputs.replicas }}"}),
        ],
    )  # fmt: skip
    parse_definition(built, default_registry)
    assert built == from_yaml
    assert [s.id for s in built.topological_order()] == ["plan", "check", "announce"]


@pytest.mark.parametrize(
    ("definition", "param", "words"),
    [
        (steps_of({"id": "a", "action": "log", "params": {"message": 1}, "depends_on": ["b"]},
                  {"id": "b", "action": "log", "params": {"message": 1}, "depends_on": ["a"]}),
         "steps.b.depends_on", "cycle: a -> b -> a"),
        (steps_of({"id": "a", "action": "deploy_everything"}), "steps.a.action", "unknown action 'deploy_everything'"),
        (steps_of({"id": "a", "action": "log", "params": {"message": 1}, "depends_on": ["ghost"]}),
         "steps.a.depends_on", "unknown step 'ghost'"),
        (steps_of({"id": "a", "action": "log", "params": {"message": "{{ steps.ghost.outputs.x }}"}}),
         "steps.a.params.message", "unknown step 'ghost'"),
        (steps_of({"id": "a", "action": "set_output"},
                  {"id": "b", "action": "log", "params": {"message": "{{ steps.a.outputs.x }}"}}),
         "steps.b.params.message", "does not depend on"),
        (steps_of({"id": "a", "action": "log", "params": {"message": "{{ params.nope }}"}}),
         "steps.a.params.message", "unknown parameter 'nope'"),
        (steps_of({"id": "a", "action": "log", "params": {"message": 1}, "condition": "steps.zz.status == 'x'"}),
         "steps.a.condition", "unknown step 'zz'"),
        (steps_of({"id": "a", "action": "log", "params": {"message": 1}, "retyr": {}}), "steps.a.retyr", "unknown key"),
        (steps_of({"id": "a", "action": "log", "params": {"mesage": "hi"}}), "steps.a.params.mesage", "unknown key"),
        (steps_of({"id": "a", "action": "sleep", "params": {}}), "steps.a.params.seconds", "missing key"),
        (steps_of({"id": "a", "action": "sleep", "params": {"seconds": 1}, "run_on": "ray"}),
         "steps.a.run_on", "only task actions run on Ray"),
        (steps_of({"id": "a", "action": "log", "params": {"message": 1}, "run_on": "gpu"}),
         "steps.a.run_on", "'executor' or 'ray'"),
        (steps_of({"id": "a", "action": "log", "params": {"message": 1}, "retry": {"max_attempts": 0}}),
         "steps.a.retry.max_attempts", "greater than or equal to 1"),
        (steps_of({"id": "a", "action": "log", "params": {"message": "{{ params.x "}}),
         "steps.a.params.message", "template syntax error"),
        (steps_of({"id": "a", "action": "log", "params": {"message": 1}},
                  {"id": "a", "action": "log", "params": {"message": 1}}), "steps.a.id", "duplicate"),
        ({"name": "p", "steps": [{"id": "a", "action": "log"}], "setings": {}}, "setings", "unknown key"),
        ({"name": "p", "steps": [{"id": "bad-id", "action": "log"}]}, "steps.bad-id.id", "pattern"),
    ],
)  # fmt: skip
def test_bad_definitions_are_refused_naming_the_step_and_key(definition, param, words):
    error = bad(definition)
    assert error.param == param
    assert param in error.message and words in error.message


def test_a_file_error_names_the_file(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("name: p\nsteps:\n  - {id: a, action: nope}\n")
    with pytest.raises(DefinitionError, match=r"p\.yaml: steps\.a\.action: unknown action 'nope'"):
        load_file(path)
    path.write_text("name: [unclosed\n")
    with pytest.raises(DefinitionError, match="invalid YAML"):
        load_file(path)


def test_params_are_typed_and_defaulted():
    definition = load_text(GOOD)
    assert resolve_params(definition, {"model": "m", "replicas": "3"}) == {"model": "m", "replicas": 3}
    assert resolve_params(definition, {"model": "m"}) == {"model": "m", "replicas": 1}
    with pytest.raises(InvalidParams, match="missing required parameter 'model'"):
        resolve_params(definition, {})
    with pytest.raises(InvalidParams, match="'replicas' must be integer"):
        resolve_params(definition, {"model": "m", "replicas": 1.5})


def test_backoff_grows_caps_and_jitters_the_same_for_the_same_seed():
    policy = RetryPolicy(max_attempts=6, backoff_s=1, multiplier=2, max_delay_s=5, jitter=0)
    assert [policy.delay_s(n, "r:s") for n in range(1, 6)] == [1, 2, 4, 5, 5]
    jittered = RetryPolicy(backoff_s=1, jitter=0.5)
    assert jittered.delay_s(1, "r:s") == jittered.delay_s(1, "r:s")
    assert {round(jittered.delay_s(1, f"r:{i}"), 6) for i in range(20)} != {1.0}
    assert all(0.5 <= jittered.delay_s(1, f"r:{i}") <= 1.5 for i in range(50))


def test_templates_keep_types_and_are_sandboxed():
    context = {"params": {"n": 2, "cfg": {"a": [1, 2]}}, "steps": {"s": {"outputs": {"x": "y"}}}}
    assert render({"n": "{{ params.n + 1 }}", "cfg": "{{ params.cfg }}", "s": "{{ steps.s.outputs.x }}!"}, context) == {
        "n": 3, "cfg": {"a": [1, 2]}, "s": "y!",
    }  # fmt: skip
    assert truthy("{{ params.n > 1 }}", context) and not truthy("params.n > 5", context)
    with pytest.raises(TemplateError):  # undefined is an error, not an empty string
        render("{{ params.missing }}", context)
    with pytest.raises(TemplateError):  # no way out to Python internals
        render("{{ params.__class__.__mro__ }}", context)
    with pytest.raises(TemplateError):
        render("{{ ''.__class__.__subclasses__() }}", context)


def test_the_readme_example_loads_as_written():
    import re
    from pathlib import Path

    readme = (Path(__file__).parents[3] / "README.md").read_text()
    block = re.search(r"```yaml\n# release.yaml\n(.*?)```", readme, re.DOTALL)
    assert block, "README lost its pipeline example"
    definition = load_text(block.group(1))
    assert [s.id for s in definition.topological_order()][-1] == "done"
    assert resolve_params(definition, {"replicas": "3"}) == {"model": "foundry-tiny", "replicas": 3}
