"""The model registry over HTTP (/models) and as the service the deployment pipeline calls, on
SQLite and PostgreSQL: local directories, the built-in model, provider models, who may do what,
and deletion refused while a live deployment uses the model."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from safetensors.numpy import save_file
from sqlalchemy import func, select, update

from control import registry
from control.app import create_app
from control.db import create_engine, create_sessionmaker
from control.errors import Conflict
from control.keys import bootstrap_admin, create_key
from control.models import Cluster, Deployment, RegisteredModel, utcnow
from control.schemas import KeyCreate
from serve.metrics.records import UsageReport
from serve.runtimes.tiny import ensure_tiny_model

CONFIG = {
    "model_type": "qwen2", "num_hidden_layers": 3, "hidden_size": 96, "num_attention_heads": 6,
    "num_key_value_heads": 2, "intermediate_size": 192, "vocab_size": 320, "max_position_embeddings": 8192,
    "torch_dtype": "bfloat16", "tie_word_embeddings": True,
}  # fmt: skip


class Usage:
    async def usage(self, *, since, until, project_id) -> UsageReport:
        return UsageReport(requests=0, errors=0, prompt_tokens=0, completion_tokens=0, cost_usd=0.0, models=[])

    async def insert_benchmarks(self, rows: list[dict]) -> int:
        return len(rows)

    async def benchmarks(self, *, model_path=None) -> list[dict]:
        return []


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Foundry home with foundry-tiny built once for the module (a few seconds)."""
    home = tmp_path_factory.mktemp("foundry-home")
    ensure_tiny_model(home)
    return home


def model_dir(root: Path, *, config: bool = True, tokenizer: bool = True, weights: bool = True) -> Path:
    root.mkdir(parents=True)
    if config:
        (root / "config.json").write_text(json.dumps(CONFIG))
    if tokenizer:
        (root / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "BPE"}}))
        (root / "tokenizer_config.json").write_text("{}")
    if weights:
        save_file({"lm_head.weight": np.zeros((4, 4), np.float32)}, str(root / "model.safetensors"))
    return root


@dataclass
class Api:
    client: httpx.AsyncClient
    viewer: dict[str, str]
    sessions: object

    async def add(self, status: int = 201, headers: dict | None = None, **body) -> dict:
        response = await self.client.post("/models", json=body, headers=headers)
        assert response.status_code == status, response.text
        return response.json()


@pytest.fixture
async def api(database_url: str, home: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Api]:
    monkeypatch.setenv("FOUNDRY_HOME", str(home))
    admin_key = await bootstrap_admin(database_url, None)
    app = create_app(database_url=database_url, usage=Usage())
    engine = create_engine(database_url)
    sessions = create_sessionmaker(engine)
    headers = {"Authorization": f"Bearer {admin_key}"}
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://control", headers=headers
    ) as client:
        assert (await client.post("/projects", json={"name": "alpha"})).status_code == 201
        member = await client.post("/projects/alpha/members", json={"user": "vera@example.com", "role": "viewer"})
        assert member.status_code == 201, member.text
        async with sessions() as session:  # a key acting for the viewer, as `foundry login` + keys create gives
            key = await create_key(session, KeyCreate(project="alpha"), owner_id=member.json()["user_id"])
        yield Api(client, {"Authorization": f"Bearer {key.key}"}, sessions)
    await engine.dispose()


def error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert set(body) == {"message", "type", "param", "code"}
    return body


async def test_admins_add_local_and_builtin_models_everyone_lists_them(api: Api, tmp_path: Path, home: Path) -> None:
    directory = model_dir(tmp_path / "qwen-mini")
    local = await api.add(source=str(directory), tags=["chat", "small"], description="a test model")
    assert local["id"].startswith("mdl_") and local["name"] == "qwen-mini"
    assert (local["kind"], local["source"], local["path"], local["provider"]) == (
        "local", str(directory), str(directory), None)
    arch = local["architecture"]
    assert (arch["num_layers"], arch["hidden_size"], arch["num_heads"], arch["num_kv_heads"]) == (3, 96, 6, 2)
    assert (arch["num_experts"], arch["dtype"], arch["context_length"]) == (0, "bfloat16", 8192)
    assert arch["parameters"] == registry.to_architecture(arch).total_params > 0
    assert local["created_by"].startswith("key:") and local["tags"] == ["chat", "small"]

    tiny = await api.add(source="builtin:foundry-tiny")
    built = str(home / "models" / "foundry-tiny")
    assert (tiny["name"], tiny["kind"], tiny["path"]) == ("foundry-tiny", "builtin", built)
    assert (tiny["architecture"]["num_layers"], tiny["architecture"]["hidden_size"]) == (4, 256)
    again = await api.add(source=str(directory), name="qwen-copy")  # the same directory under another name
    assert again["id"] != local["id"]

    for headers in (None, api.viewer):  # model:view: every role
        listed = (await api.client.get("/models", headers=headers)).json()
        assert [m["name"] for m in listed["data"]] == ["foundry-tiny", "qwen-copy", "qwen-mini"]
        assert (await api.client.get(f"/models/{local['id']}", headers=headers)).json() == local
        assert (await api.client.get("/models/qwen-mini", headers=headers)).json() == local
    tagged = (await api.client.get("/models", params={"tag": "chat"})).json()["data"]
    assert [m["name"] for m in tagged] == ["qwen-mini"]
    assert error(await api.client.get("/models/nope"), 404)["code"] == "model_not_found"


async def test_viewers_may_not_change_the_registry(api: Api, tmp_path: Path) -> None:
    denied = await api.client.post("/models", json={"source": "builtin:foundry-tiny"}, headers=api.viewer)
    assert error(denied, 403)["code"] == "permission_denied"
    tiny = await api.add(source="builtin:foundry-tiny")
    for method, body in (("PATCH", {"description": "x"}), ("DELETE", None)):
        response = await api.client.request(method, f"/models/{tiny['id']}", json=body, headers=api.viewer)
        assert error(response, 403)["code"] == "permission_denied"
    assert (await api.client.get(f"/models/{tiny['id']}")).json() == tiny


async def test_duplicates_and_bad_sources_are_refused_naming_the_problem(api: Api, tmp_path: Path) -> None:
    directory = model_dir(tmp_path / "m")
    await api.add(source=str(directory))
    duplicate = error(await api.client.post("/models", json={"source": str(directory)}), 409)
    assert duplicate["code"] == "model_exists" and duplicate["param"] == "name" and "'m'" in duplicate["message"]
    other = error(await api.client.post("/models", json={"source": "builtin:foundry-tiny", "name": "m"}), 409)
    assert str(directory) in other["message"]

    partial = model_dir(tmp_path / "partial", tokenizer=False, weights=False)
    missing = error(await api.client.post("/models", json={"source": str(partial)}), 400)
    assert (missing["param"], missing["code"]) == ("source", "incomplete_model_directory")
    assert "tokenizer" in missing["message"] and "weights" in missing["message"]
    assert "config.json" not in missing["message"].split("lacks", 1)[1]
    no_config_dir = model_dir(tmp_path / "nc", config=False)
    no_config = error(await api.client.post("/models", json={"source": str(no_config_dir)}), 400)
    assert "lacks config.json" in no_config["message"]
    absent = error(await api.client.post("/models", json={"source": str(tmp_path / "absent")}), 404)
    assert (absent["param"], absent["code"]) == ("source", "model_directory_not_found")
    openai = {"type": "openai", "model": "x"}
    cases = {
        "relative": ({"source": "models/m"}, "source", "absolute path"),
        "home": ({"source": "~/models/m"}, "source", "absolute path"),
        "unknown type": ({"source": "ollama:llama3"}, "source", "unknown provider type 'ollama'"),
        "unknown builtin": ({"source": "builtin:gpt-5"}, "source", "unknown built-in model"),
        "bad model id": ({"source": "openai:gpt 4"}, "source", "the model id after 'openai:'"),
        "table type": ({"provider": {"type": "bedrock", "model": "x"}}, "provider.type", "unknown provider type"),
        "no model": ({"provider": {"type": "together"}}, "provider.model", "the model id"),
        "both": ({"source": "openai:x", "provider": openai}, None, "not both"),
        "clear key": ({"provider": openai | {"api_key": "sk-123"}}, "provider.api_key", "Extra inputs"),
        "two keys": ({"provider": openai | {"api_key_env": "A", "api_key_encrypted": "b"}}, "provider.api_key_env",
                     "not both"),
        "bad field": ({"provider": {"type": "azure", "model": "x", "api_version": 3}}, "provider.api_version",
                      "string"),
        "lax int": ({"provider": openai | {"max_connections": "5"}}, "provider.max_connections", "integer"),
        "no source": ({"name": "x"}, None, "give source"),
        "null source": ({"source": None}, "source", "string"),
        "bad name": ({"source": "builtin:foundry-tiny", "name": "a b"}, "name", "pattern"),
        "unknown field": ({"source": "builtin:foundry-tiny", "weights": "x"}, "weights", "Extra inputs"),
    }  # fmt: skip
    for case, (body, param, words) in cases.items():
        refused = error(await api.client.post("/models", json=body), 400)
        assert refused["param"] == param and words in refused["message"], (case, refused)
    named = [m["name"] for m in (await api.client.get("/models")).json()["data"]]
    assert named == ["m"]
    spaced = await api.add(source=str(model_dir(tmp_path / "My Model (v2)")))
    assert spaced["name"] == "My-Model-v2"  # a directory's name made a model name


async def test_provider_models(api: Api) -> None:
    openai = await api.add(provider={"type": "openai", "model": "gpt-4o-mini", "api_key_env": "OPENAI_KEY"})
    assert (openai["name"], openai["kind"], openai["path"], openai["architecture"]) == (
        "gpt-4o-mini", "provider", None, None)
    assert openai["provider"] == {"type": "openai", "model": "gpt-4o-mini", "api_key_env": "OPENAI_KEY"}

    llama = await api.add(provider={"type": "together", "model": "meta-llama/Llama-3.1-8B-Instruct"}, tags=["catalog"])
    assert llama["name"] == "meta-llama/Llama-3.1-8B-Instruct" and llama["source"] == "together:" + llama["name"]
    assert llama["architecture"] == registry.architecture_of("meta-llama/Llama-3.1-8B-Instruct")
    assert (await api.client.get(f"/models/{llama['name']}")).json() == llama  # a name with a '/'

    azure = await api.add(name="gpt-4o-eu", provider={"type": "azure", "model": "gpt-4o", "api_key_encrypted": "a2V5",
                                                      "base_url": "https://eu.example.com"})  # fmt: skip
    assert azure["provider"]["api_key_encrypted"] == "(encrypted)" and "a2V5" not in json.dumps(azure)
    async with api.sessions() as session:  # stored for the gateway's provider, shown to nobody
        stored = await session.get(RegisteredModel, azure["id"])
        assert stored.provider["api_key_encrypted"] == "a2V5"
    local = await api.add(source="local:chat-main")
    assert local["provider"] == {"type": "local", "runtime": "chat-main"}


async def test_update_and_delete_are_audited_and_delete_waits_for_deployments(api: Api, tmp_path: Path) -> None:
    model = await api.add(source=str(model_dir(tmp_path / "m")))
    change = {"description": "v2", "tags": ["b", "a", "b"]}
    updated = (await api.client.patch(f"/models/{model['id']}", json=change)).json()
    assert (updated["description"], updated["tags"]) == ("v2", ["b", "a"])
    assert updated["updated_at"] >= model["updated_at"] and updated["architecture"] == model["architecture"]
    assert error(await api.client.patch("/models/m", json={}), 400)["message"].startswith("nothing to change")
    assert error(await api.client.patch("/models/m", json={"tags": None}), 400)["param"] == "tags"
    assert error(await api.client.patch("/models/m", json={"name": "n"}), 400)["param"] == "name"

    async with api.sessions() as session:
        cluster = Cluster(name="local", kind="local")
        session.add(cluster)
        await session.flush()
        for name in ("old", "live"):
            session.add(Deployment(name=name, model_id=model["id"], cluster_id=cluster.id, engine="cpu"))
        await session.flush()
        await session.execute(update(Deployment).where(Deployment.name == "old").values(deleted_at=utcnow()))
        await session.commit()
    in_use = error(await api.client.delete("/models/m"), 409)
    assert (in_use["code"], in_use["param"]) == ("model_in_use", "model") and "'live'" in in_use["message"]
    assert "'old'" not in in_use["message"]

    async with api.sessions() as session:
        await session.execute(update(Deployment).where(Deployment.name == "live").values(deleted_at=utcnow()))
        await session.commit()
    deleted = await api.client.delete(f"/models/{model['id']}")
    assert deleted.status_code == 200 and deleted.json()["id"] == model["id"]
    assert error(await api.client.get(f"/models/{model['id']}"), 404)["code"] == "model_not_found"
    async with api.sessions() as session:  # its deleted deployments' rows went with it
        assert await session.scalar(select(func.count()).select_from(Deployment)) == 0

    records = (await api.client.get("/audit", params={"target": f"model:{model['id']}"})).json()["data"]
    assert [r["action"] for r in records] == ["model.create", "model.update", "model.delete"]
    assert records[1]["changes"] == {"description": "v2", "tags": ["b", "a"]}
    assert records[0]["actor"] == model["created_by"]


async def test_the_service_is_idempotent_for_the_pipeline_step(api: Api, tmp_path: Path, home: Path) -> None:
    directory = model_dir(tmp_path / "m")
    async with api.sessions() as session:
        first = await registry.add_model(session, source=str(directory) + "/", name="step", home=home)
        again = await registry.add_model(session, source=str(directory), name="step", home=home)
        assert again.id == first.id and first.source == str(directory)
        with pytest.raises(Conflict):
            await registry.add_model(session, source="builtin:foundry-tiny", name="step", home=home)
        with pytest.raises(Conflict):
            await registry.add_model(session, source=str(directory), name="step", exist_ok=False)
        assert (await registry.get_model(session, "step")).id == first.id
        assert [m.name for m in await registry.list_models(session)] == ["step"]
        updated = await registry.update_model(session, first.id, tags=["x"])
        assert updated.tags == ["x"] and updated.description == ""
        await registry.delete_model(session, "step")
        assert await registry.list_models(session) == []
