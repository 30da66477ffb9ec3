"""``foundry models add|list|get|update|delete`` against a real control API served by uvicorn."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file
from test_admin_cli import serving
from typer.testing import CliRunner

from control.app import create_app
from control.cli import app as foundry_app
from control.keys import bootstrap_admin
from serve.metrics.records import UsageReport
from serve.runtimes.tiny import ensure_tiny_model

CONFIG = {
    "model_type": "llama", "num_hidden_layers": 3, "hidden_size": 64, "num_attention_heads": 4,
    "num_key_value_heads": 4, "intermediate_size": 128, "vocab_size": 256, "max_position_embeddings": 1024,
    "torch_dtype": "float16",
}  # fmt: skip


class Usage:
    async def usage(self, *, since, until, project_id) -> UsageReport:
        return UsageReport(requests=0, errors=0, prompt_tokens=0, completion_tokens=0, cost_usd=0.0, models=[])

    async def insert_benchmarks(self, rows: list[dict]) -> int:
        return len(rows)

    async def benchmarks(self, *, model_path=None) -> list[dict]:
        return []


class Foundry:
    """The whole ``foundry`` command, run in-process as a shell would."""

    def __init__(self, api: str, admin_key: str) -> None:
        self.env = {"FOUNDRY_API": api, "FOUNDRY_ADMIN_KEY": admin_key, "FOUNDRY_API_KEY": None}

    async def __call__(self, *args: str, ok: bool = True):
        result = await asyncio.to_thread(CliRunner().invoke, foundry_app, list(args), env=self.env)
        assert "Traceback" not in result.output
        assert (result.exit_code == 0) is ok, result.output
        return result

    async def json(self, *args: str):
        return json.loads((await self(*args, "--json")).stdout)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("foundry-home")
    ensure_tiny_model(home)
    return home


@pytest.fixture
async def foundry(database_url: str, home: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Foundry]:
    monkeypatch.setenv("FOUNDRY_HOME", str(home))  # where the served API finds builtin:foundry-tiny
    admin_key = await bootstrap_admin(database_url, None)
    with serving(create_app(database_url=database_url, usage=Usage())) as api:
        yield Foundry(api, admin_key)


async def test_models_from_the_command_line(foundry: Foundry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tiny = await foundry.json("models", "add", "builtin:foundry-tiny")
    assert set(tiny) >= {"id", "name", "architecture"} and tiny["name"] == "foundry-tiny"

    directory = tmp_path / "work" / "mini-llama"
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(CONFIG))
    (directory / "tokenizer.json").write_text("{}")
    save_file({"w": np.zeros((2, 2), np.float16)}, str(directory / "model.safetensors"))
    monkeypatch.chdir(tmp_path / "work")  # a relative path is the shell's, sent absolute
    mini = await foundry.json("models", "add", "./mini-llama", "--name", "mini", "--tag", "[bold]hot[/bold]",
                              "--description", "three layers")  # fmt: skip
    assert (mini["name"], mini["source"], mini["tags"]) == ("mini", str(directory), ["[bold]hot[/bold]"])
    assert (mini["architecture"]["num_layers"], mini["architecture"]["dtype"]) == (3, "float16")

    gpt = await foundry.json("models", "add", "openai:gpt-4o-mini", "--api-key-env", "OPENAI_KEY",
                             "--base-url", "http://127.0.0.1:9/v1", "--provider-option", "weight=2")  # fmt: skip
    assert gpt["provider"] == {"type": "openai", "model": "gpt-4o-mini", "base_url": "http://127.0.0.1:9/v1",
                               "api_key_env": "OPENAI_KEY", "weight": 2.0}  # fmt: skip

    listed = await foundry.json("models", "list")
    assert [m["name"] for m in listed] == ["foundry-tiny", "gpt-4o-mini", "mini"]
    table = (await foundry("models", "list")).stdout
    assert "[bold]hot[/bold]" in table  # tags are data, not markup
    for row in (tiny, mini, gpt):
        assert row["id"] in table
    assert "3.95M" in table  # foundry-tiny's parameters
    assert await foundry.json("models", "get", "mini") == mini
    shown = (await foundry("models", "get", mini["id"])).stdout
    assert "three layers" in shown and "4 / 4" in shown and "1024" in shown
    assert "not in the optimizer's catalog" in (await foundry("models", "get", "gpt-4o-mini")).stdout

    updated = await foundry.json("models", "update", "mini", "--tag", "prod", "--description", "v2")
    assert (updated["tags"], updated["description"]) == (["prod"], "v2")
    assert (await foundry.json("models", "update", "mini", "--clear-tags"))["tags"] == []
    nothing = await foundry("models", "update", "mini", ok=False)
    assert "nothing to change" in nothing.output

    duplicate = await foundry("models", "add", "./mini-llama", "--name", "mini", ok=False)
    assert "already registered" in duplicate.output and "HTTP 409" in duplicate.output
    (tmp_path / "work" / "empty").mkdir()
    incomplete = await foundry("models", "add", "empty", ok=False)
    assert "lacks config.json" in incomplete.output and "tokenizer" in incomplete.output
    assert "HTTP 400" in incomplete.output
    unknown = await foundry("models", "add", "ollama:llama3", ok=False)
    assert "unknown provider type 'ollama'" in unknown.output

    assert "deleted model mini" in (await foundry("models", "delete", "mini")).stdout
    missing = await foundry("models", "get", "mini", ok=False)
    assert "no model with id or name 'mini'" in missing.output and "HTTP 404" in missing.output
    assert [m["name"] for m in await foundry.json("models", "list", "--tag", "nope")] == []
