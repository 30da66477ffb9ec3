"""The Kubernetes deployment path against the fake API server (tests/fakes/kube_api.py), with the
real ``kubernetes`` client, the real control API in-process and the real pipeline engine (DBOS on
SQLite) running the deployment actions: add a cluster (inventory from labelled nodes), deploy
(the optimizer's pick as an admitted RayService and its key Secret), wait for Ready, a failed
condition surfaces its reason, delete (both gone).
"""

from __future__ import annotations

import asyncio
import json
import os

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import select

from control import deploy_actions
from control.app import create_app
from control.db import create_engine, create_sessionmaker, migrate
from control.keys import bootstrap_admin
from control.kuberay.manifests import KEY_SECRET_KEY, rayservice_name
from control.kuberay.schema import admit
from control.models import RegisteredModel, utcnow
from pipelines import default_registry
from serve.secrets import PRIVATE_KEY_ENV, decrypt, generate_keypair
from tests.fakes.kube_api import FakeKubeAPI
from tests.integration.pipelines.harness import database_url, running_engine

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(600)]

LLAMA_8B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
    "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8, "vocab_size": 128256,
    "max_position_embeddings": 131072, "torch_dtype": "bfloat16", "rope_theta": 500000.0,
}  # fmt: skip
H100 = "NVIDIA-H100-80GB-HBM3"


@pytest.fixture(scope="module")
def kube():
    with FakeKubeAPI.running(seed=7, namespace="llm", ready_after_s=0.5) as api:
        api.add_node("cpu-1", cpu="32", memory="128Gi")
        api.add_node("gpu-1", gpus=8, gpu_product=H100, gpu_memory_mb=81559)
        api.add_node("gpu-2", gpus=8, gpu_product=H100, gpu_memory_mb=81559)
        yield api


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def control(tmp_path_factory, kube):
    tmp = tmp_path_factory.mktemp("deploy-kuberay")
    private_pem, _ = generate_keypair(2048)
    before = os.environ.get(PRIVATE_KEY_ENV)
    os.environ[PRIVATE_KEY_ENV] = private_pem  # the stack's key pair, as foundry up names it
    url = f"sqlite:///{tmp / 'foundry.db'}"
    await migrate(url)
    key = await bootstrap_admin(url, None)
    model_dir = tmp / "Llama-3.1-8B-Instruct"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps(LLAMA_8B))
    engine = create_engine(url)
    async with create_sessionmaker(engine)() as session:
        session.add(RegisteredModel(name="llama-8b", source=str(model_dir), kind="local", path=str(model_dir),
                                    description="", tags=[], created_at=utcnow(), updated_at=utcnow()))  # fmt: skip
        await session.commit()
    await engine.dispose()
    deploy_actions.configure(database_url=url, home=str(tmp))  # no gateway: register and benchmark skip the HTTP parts
    try:
        async with running_engine(database_url("sqlite", tmp, None), actions=default_registry) as pipelines:
            app = create_app(database_url=url, usage=None, pipelines=pipelines, home=str(tmp))
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with app.router.lifespan_context(app):
                async with httpx.AsyncClient(transport=transport, base_url="http://control",
                                             headers={"Authorization": f"Bearer {key}"}, timeout=120) as client:  # fmt: skip
                    yield client, private_pem
    finally:
        await deploy_actions.close()
        if before is None:
            os.environ.pop(PRIVATE_KEY_ENV, None)
        else:
            os.environ[PRIVATE_KEY_ENV] = before


async def wait_status(client, dep_id: str, statuses: tuple[str, ...], timeout_s: float = 120) -> dict:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        dep = (await client.get(f"/deployments/{dep_id}")).json()
        assert "status" in dep, dep
        if dep["status"] in statuses:
            return dep
        assert loop.time() < deadline, dep
        await asyncio.sleep(0.1)  # polling a condition, bounded by the deadline


async def test_a_cluster_is_added_with_its_gpu_inventory_and_its_kubeconfig_stays_secret(control, kube):
    client, _ = control
    added = await client.post("/clusters", json={"name": "gpu-east", "kubeconfig": kube.kubeconfig()})
    assert added.status_code == 201, added.text
    cluster = added.json()
    assert cluster["kind"] == "kubernetes" and cluster["operator"] is True and cluster["namespace"] == "llm"
    assert cluster["inventory"]["gpus_by_type"] == {H100: 16}
    assert cluster["inventory"]["totals"]["nodes"] == 3 and cluster["inventory"]["totals"]["gpus"] == 16
    listed = await client.get("/clusters")
    for text in (added.text, listed.text):
        assert kube.token not in text and "kubeconfig" not in json.loads(text).get("data", [cluster])[0]
    again = await client.post("/clusters", json={"name": "gpu-east", "kubeconfig": kube.kubeconfig()})
    assert again.status_code == 409


async def test_a_cluster_without_the_operator_or_with_a_bad_token_is_refused_with_the_reason(control, kube):
    client, _ = control
    bad = await client.post("/clusters", json={"name": "bad-token", "kubeconfig": kube.kubeconfig(token="nope-nope")})
    assert bad.status_code >= 400 and "nope-nope" not in bad.text
    kube.operator_installed = False
    try:
        missing = await client.post("/clusters", json={"name": "no-operator", "kubeconfig": kube.kubeconfig()})
    finally:
        kube.operator_installed = True
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "operator_missing"


async def test_deploy_waits_for_ready_then_delete_removes_the_rayservice_and_its_secret(control, kube):
    client, private_pem = control
    created = await client.post("/deployments", json={
        "model": "llama-8b", "cluster": "gpu-east", "name": "llama-8b-chat", "isl": 1024, "osl": 256,
        "concurrency": 16, "slo_ttft_ms": 1000, "slo_tpot_ms": 50,
    })  # fmt: skip
    assert created.status_code == 202, created.text
    dep = await wait_status(client, created.json()["id"], ("running", "failed"))
    assert dep["status"] == "running", dep
    assert dep["engine"] == "vllm" and dep["config"]["choice"]["gpu"] == "h100_sxm"
    assert dep["predicted"]["ttft_ms"] > 0 and dep["predicted"]["ttft_ms_p90"] >= dep["predicted"]["ttft_ms"]

    name = rayservice_name("llama-8b-chat")
    stored = kube.get("rayservices", name, "llm")
    assert stored is not None and stored["status"]["conditions"][0]["status"] == "True"
    admit({k: v for k, v in stored.items() if k != "status"})  # what was stored passes the CRD schema and the operator's rules
    workers = stored["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    per_pod = int(workers[0]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"])
    choice = dep["config"]["choice"]
    assert per_pod * (workers[0].get("numOfHosts") or 1) == choice["tp"] * choice["pp"]
    assert workers[0]["template"]["spec"]["nodeSelector"]["nvidia.com/gpu.product"] == H100
    assert "ray.io/initializing-timeout" in stored["metadata"]["annotations"]
    assert stored["metadata"]["annotations"]["foundry.ai/deployment"] == dep["id"]
    secret = kube.secrets[("llm", f"{name}-key")]
    assert KEY_SECRET_KEY in secret["data"]

    # the gateway's route: the RayService's Serve service, its key sealed for the stack's key pair
    from control.models import Deployment

    engine = create_engine(deploy_actions._settings["database_url"])
    try:
        async with create_sessionmaker(engine)() as session:
            row = await session.scalar(select(Deployment).where(Deployment.id == dep["id"]))
    finally:
        await engine.dispose()
    provider = row.endpoint["provider"]
    assert provider["type"] == "openai" and f"{name}-serve-svc.llm.svc" in provider["base_url"]
    import base64

    assert decrypt(provider["api_key_encrypted"], private_pem=private_pem) == base64.b64decode(
        secret["data"][KEY_SECRET_KEY]).decode()  # fmt: skip

    # scaling replaces the RayService with the new replicas
    scaled = await client.patch(f"/deployments/{dep['id']}", json={"replicas": 2})
    assert scaled.status_code == 200, scaled.text
    workers = kube.get("rayservices", name, "llm")["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert workers[0]["replicas"] == 2 * (workers[0].get("numOfHosts") or 1) or workers[0]["replicas"] == 2

    deleting = await client.delete(f"/deployments/{dep['id']}")
    assert deleting.status_code == 202
    assert (await wait_status(client, dep["id"], ("deleted", "failed")))["status"] == "deleted"
    assert kube.get("rayservices", name, "llm") is None and ("llm", f"{name}-key") not in kube.secrets


async def test_a_failed_ready_condition_fails_the_deployment_with_its_reason(control, kube):
    client, _ = control
    kube.fail_rayservice(rayservice_name("llama-8b-broken"), reason="InitializingTimeout",
                         message="the cluster was not ready within 30m")  # fmt: skip
    created = await client.post("/deployments", json={"model": "llama-8b", "cluster": "gpu-east", "name": "llama-8b-broken"})
    assert created.status_code == 202, created.text
    dep = await wait_status(client, created.json()["id"], ("running", "failed"))
    assert dep["status"] == "failed"
    assert "InitializingTimeout" in dep["error"] and "not ready within 30m" in dep["error"]
    # a failed deployment is deleted like a running one: its RayService goes
    assert (await client.delete(f"/deployments/{dep['id']}")).status_code == 202
    assert (await wait_status(client, dep["id"], ("deleted",)))["status"] == "deleted"
    assert kube.get("rayservices", rayservice_name("llama-8b-broken"), "llm") is None


async def test_model_add_registers_a_model_as_a_pipeline_step_once_however_often_it_runs(control):
    client, _ = control
    definition = {"name": "add-model", "steps": [
        {"id": "add", "action": "model_add", "params": {"source": "builtin:foundry-tiny", "tags": ["demo"]}}]}  # fmt: skip
    created = await client.post("/pipelines", json=definition)
    assert created.status_code == 201, created.text
    pipeline = created.json()
    for _ in range(2):  # a second run (as a re-run step would) finds the same model
        started = await client.post(f"/pipelines/{pipeline['id']}/runs", json={})
        assert started.status_code == 201, started.text
        run = started.json()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120
        while run["status"] not in ("succeeded", "failed"):
            assert loop.time() < deadline, run
            await asyncio.sleep(0.1)
            got = await client.get(f"/pipelines/runs/{run['id']}")
            assert got.status_code == 200, got.text
            run = got.json()
        assert run["status"] == "succeeded", run
        assert run["steps"]["add"]["outputs"]["name"] == "foundry-tiny"
    models = [m for m in (await client.get("/models")).json()["data"] if m["name"] == "foundry-tiny"]
    assert len(models) == 1 and models[0]["tags"] == ["demo"] and models[0]["architecture"]["num_layers"] >= 1
