"""Read pipeline definitions from YAML or JSON files or text.

    definition = load_file("pipelines/deploy.yaml")      # .yaml, .yml or .json
    definition = load_text(text)                         # YAML (JSON is YAML too)

Both check the definition against an action registry (the default one unless given), so
unknown actions, keys and references are refused here, naming the step and the key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from pipelines.actions import ActionRegistry, default_registry
from pipelines.definition import PipelineDefinition, parse_definition
from pipelines.errors import DefinitionError

__all__ = ["load_file", "load_text", "read_file"]


def read_file(path: str | Path) -> dict[str, Any]:
    """The plain data of a definition file (not yet checked)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise DefinitionError(f"{path}: cannot read the file: {exc.strerror}") from None
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DefinitionError(f"{path}: invalid JSON: {exc}") from None
    else:
        data = _yaml(text, str(path))
    if not isinstance(data, dict):
        raise DefinitionError(f"{path}: a pipeline definition is a mapping with name and steps")
    return data


def load_file(path: str | Path, registry: ActionRegistry | None = None) -> PipelineDefinition:
    data = read_file(path)
    try:
        return parse_definition(data, registry or default_registry)
    except DefinitionError as exc:
        raise DefinitionError(f"{path}: {exc.message}", param=exc.param) from None


def load_text(text: str, registry: ActionRegistry | None = None) -> PipelineDefinition:
    return parse_definition(_yaml(text, "<definition>"), registry or default_registry)


def _yaml(text: str, source: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DefinitionError(f"{source}: invalid YAML: {exc}") from None
