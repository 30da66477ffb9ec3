"""control.kube with the real ``kubernetes`` client against tests/fakes/kube_api.py over HTTP.

Also a contract check of the fake itself: what it stores for each KubeRay sample is what
:func:`control.kuberay.admit` returns, its status is a subresource, a stale resourceVersion gets
409, and the client's own ``watch`` reads its event stream.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import watch
from kubernetes.client.exceptions import ApiException
from kubernetes.config import new_client_from_config_dict

from control.kube import (
    TERMINAL_REASONS,
    KubeAuthFailed,
    KubeClient,
    KubeConfigInvalid,
    KubeConflict,
    KubeNotFound,
    KubeTimeout,
    KubeUnreachable,
    RayServiceNotReady,
)
from control.kuberay import ManifestInvalid, admit
from tests.fakes.kube_api import FAIL_ANNOTATION, FakeKubeAPI, _self_signed

SAMPLES = Path(__file__).resolve().parents[3].parent / "shared" / "reference" / "kuberay" / "samples"
H100 = "NVIDIA-H100-80GB-HBM3"


async def wait_for(check: Callable[[], Awaitable[object]], timeout_s: float = 10.0, what: str = "") -> object:
    """Poll ``check`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or check}")
        await asyncio.sleep(0.05)


def rayservice(name: str = "llm-a", *, replicas: int = 1, annotations: dict | None = None) -> dict:
    pod = {
        "spec": {
            "containers": [
                {
                    "name": "ray-worker",
                    "image": "rayproject/ray:2.52.0",
                    "resources": {"limits": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}},
                }
            ]
        }
    }
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": name, "labels": {"foundry.dev/deployment": name}, "annotations": annotations or {}},
        "spec": {
            "serveConfigV2": "applications: []\n",
            "rayClusterConfig": {
                "rayVersion": "2.52.0",
                "headGroupSpec": {
                    "rayStartParams": {"num-cpus": "0"},
                    "template": {"spec": {"containers": [{"name": "ray-head", "image": "rayproject/ray:2.52.0"}]}},
                },
                "workerGroupSpecs": [
                    {"groupName": "gpu", "replicas": replicas, "minReplicas": 1, "maxReplicas": 4, "template": pod}
                ],
            },
        },
    }


@pytest.fixture
def api() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI.running(seed=7, namespace="llm", ready_after_s=0.3) as server:
        server.add_node("gpu-a", cpu="95500m", memory="1900Gi", gpus=8, gpu_product=H100, gpu_memory_mb=81559)
        server.add_node("gpu-b", cpu="96", memory="2Ti", gpus=4, gpu_product="NVIDIA-L4", gpu_memory_mb=23034)
        server.add_node("cpu-a", cpu="7910m", memory="30Gi")
        server.add_node("gpu-down", cpu="8", memory="32Gi", gpus=2, gpu_product=H100, gpu_memory_mb=81559, ready=False)
        yield server


@pytest.fixture
async def kube(api: FakeKubeAPI) -> KubeClient:
    client = await KubeClient.connect(api.kubeconfig())
    yield client
    await client.aclose()


def raw_client(api: FakeKubeAPI) -> k8s.CustomObjectsApi:
    return k8s.CustomObjectsApi(new_client_from_config_dict(yaml.safe_load(api.kubeconfig()), persist_config=False))


# -- the cluster -------------------------------------------------------------------------------


async def test_inventory_from_allocatable_and_gfd_labels(kube):
    inventory = await kube.inventory()
    nodes = {node["name"]: node for node in inventory["nodes"]}
    assert nodes["gpu-a"] == {
        "name": "gpu-a",
        "ready": True,
        "cpus": 95.5,
        "memory_bytes": 1900 * 2**30,
        "gpus": 8,
        "gpu_product": H100,
        "gpu_memory_mb": 81559,
        "labels_gpu_count": 8,
    }
    assert nodes["cpu-a"]["cpus"] == pytest.approx(7.91)
    assert (nodes["cpu-a"]["gpus"], nodes["cpu-a"]["gpu_product"], nodes["cpu-a"]["labels_gpu_count"]) == (0, None, None)
    assert nodes["gpu-down"]["ready"] is False
    assert inventory["totals"] == {
        "nodes": 4,
        "ready_nodes": 3,
        "cpus": pytest.approx(95.5 + 96 + 7.91 + 8),
        "memory_bytes": (1900 + 2048 + 30 + 32) * 2**30,
        "gpus": 14,
    }
    assert inventory["gpus_by_type"] == {H100: 10, "NVIDIA-L4": 4}


async def test_operator_presence_and_absence(api, kube):
    assert await kube.operator_installed() is True
    api.operator_installed = False
    assert await kube.operator_installed() is False


async def test_health_names_the_server_version(kube):
    assert await kube.health() == {"healthy": True, "reason": None, "code": None, "version": "v1.34.1-fake"}


# -- apply, ready, patch, delete ---------------------------------------------------------------


async def test_apply_creates_then_replaces_idempotently(api, kube):
    created = await kube.apply_rayservice(rayservice())
    meta = created["metadata"]
    assert (meta["namespace"], meta["generation"]) == ("llm", 1)
    assert meta["uid"] and meta["resourceVersion"] and meta["creationTimestamp"]
    assert created["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["numOfHosts"] == 1  # defaulted

    again = await kube.apply_rayservice(rayservice())
    assert again["metadata"]["uid"] == meta["uid"]
    assert again["metadata"]["generation"] == 1  # same spec: no new generation
    changed = await kube.apply_rayservice(rayservice(replicas=3))
    assert changed["metadata"]["generation"] == 2
    assert changed["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["replicas"] == 3
    assert api.count("rayservices") == 1
    assert [method for method, path in api.requests if path.endswith("/rayservices")].count("POST") == 3


async def test_apply_retries_a_stale_replace_once(api, kube):
    await kube.apply_rayservice(rayservice())
    api.conflict_next(1)
    assert (await kube.apply_rayservice(rayservice(replicas=2)))["metadata"]["generation"] == 2
    api.conflict_next(2)
    with pytest.raises(KubeConflict) as caught:
        await kube.apply_rayservice(rayservice(replicas=3))
    assert caught.value.cluster_status == 409 and "the object has been modified" in str(caught.value)


async def test_an_invalid_manifest_is_refused_before_sending(api, kube):
    bad = rayservice()
    bad["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["replicas"] = "two"
    with pytest.raises(ManifestInvalid) as caught:
        await kube.apply_rayservice(bad)
    assert caught.value.errors[0].path == "spec.rayClusterConfig.workerGroupSpecs[0].replicas"
    assert not any(method == "POST" for method, _ in api.requests)


async def test_the_servers_422_comes_back_with_its_causes(api, kube):
    bad = rayservice()
    bad["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["replicas"] = "two"
    bad["spec"]["surprise"] = True
    with pytest.raises(ManifestInvalid) as caught:
        await kube.apply_rayservice(bad, admit_first=False)
    assert {path for path, _ in caught.value.errors} == {
        "spec.rayClusterConfig.workerGroupSpecs[0].replicas",
        "spec.surprise",
    }
    assert caught.value.status == 422 and (caught.value.kind, caught.value.name) == ("RayService", "llm-a")
    assert api.count("rayservices") == 0


async def test_ready_after_the_operator_moves_it(api, kube):
    await kube.apply_rayservice(rayservice())
    assert (await kube.rayservice_ready("llm-a"))[0] is False
    await wait_for(lambda: _ready(kube, "llm-a"), what="Ready=True")
    assert await kube.rayservice_ready("llm-a") == (True, "NonZeroServeEndpoints", "Number of serve endpoints is greater than 0")
    status = (await kube.get_rayservice("llm-a"))["status"]
    assert (status["serviceStatus"], status["numServeEndpoints"], status["observedGeneration"]) == ("Running", 1, 1)


@pytest.mark.parametrize(
    ("annotations", "reason"),
    [
        ({FAIL_ANNOTATION: "stall", "ray.io/initializing-timeout": "1s"}, "InitializingTimeout"),
        ({FAIL_ANNOTATION: "ValidationFailed"}, "ValidationFailed"),
    ],
)
async def test_a_failed_condition_surfaces_its_reason(kube, annotations, reason):
    await kube.apply_rayservice(rayservice(annotations=annotations))
    ready, got, message = await wait_for(lambda: _settled(kube, "llm-a"), what=reason)
    assert (ready, got) == (False, reason) and message
    assert got in TERMINAL_REASONS


async def test_wait_until_ready_or_the_reason(api, kube):
    await kube.apply_rayservice(rayservice("llm-a"))
    assert await kube.wait_rayservice_ready("llm-a", timeout_s=10, poll_s=0.05) == "NonZeroServeEndpoints"

    await kube.apply_rayservice(rayservice("llm-b", annotations={FAIL_ANNOTATION: "ValidationFailed"}))
    with pytest.raises(RayServiceNotReady) as caught:
        await kube.wait_rayservice_ready("llm-b", timeout_s=10, poll_s=0.05)
    assert caught.value.reason == "ValidationFailed" and "ValidationFailed" in str(caught.value)

    await kube.apply_rayservice(rayservice("llm-c", annotations={FAIL_ANNOTATION: "stall"}))
    started = time.monotonic()
    with pytest.raises(RayServiceNotReady) as caught:
        await kube.wait_rayservice_ready("llm-c", timeout_s=0.5, poll_s=0.05)
    assert time.monotonic() - started < 3
    assert caught.value.reason == "Initializing" and "within 0.5 s" in str(caught.value)


async def test_the_operator_rejects_what_the_schema_allows(kube):
    manifest = rayservice(replicas=9)  # over maxReplicas: the CRD schema cannot say so
    with pytest.raises(ManifestInvalid):
        admit(manifest)
    await kube.apply_rayservice(manifest, admit_first=False)  # the API server stores it...
    ready, reason, message = await wait_for(lambda: _settled(kube, "llm-a"), what="ValidationFailed")
    assert (ready, reason) == (False, "ValidationFailed")  # ...and the operator refuses it
    assert "workerGroupSpecs[0].replicas" in message


async def test_fail_rayservice_switch(api, kube):
    api.fail_rayservice("llm-a", "InitializingTimeout", "no GPUs")
    await kube.apply_rayservice(rayservice())
    assert await wait_for(lambda: _settled(kube, "llm-a")) == (False, "InitializingTimeout", "no GPUs")


async def test_patch_and_scale(kube):
    await kube.apply_rayservice(rayservice())
    patched = await kube.patch_rayservice("llm-a", {"metadata": {"labels": {"team": "search"}}})
    assert patched["metadata"]["labels"] == {"foundry.dev/deployment": "llm-a", "team": "search"}
    assert patched["metadata"]["generation"] == 1  # metadata only

    scaled = await kube.scale_worker_group("llm-a", "gpu", replicas=3, max_replicas=6)
    group = scaled["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    assert (group["replicas"], group["minReplicas"], group["maxReplicas"]) == (3, 1, 6)
    assert scaled["metadata"]["generation"] == 2

    with pytest.raises(ManifestInvalid) as caught:
        await kube.scale_worker_group("llm-a", "gpu", replicas=7)
    assert caught.value.errors[0].path == "spec.rayClusterConfig.workerGroupSpecs[0].replicas"
    with pytest.raises(KubeNotFound):
        await kube.scale_worker_group("llm-a", "cpu", replicas=1)
    with pytest.raises(KubeNotFound):
        await kube.patch_rayservice("nope", {"metadata": {"labels": {"a": "b"}}})


async def test_delete_twice_is_fine(api, kube):
    await kube.apply_rayservice(rayservice())
    assert await kube.delete_rayservice("llm-a") is True
    assert await kube.get_rayservice("llm-a") is None
    assert await kube.delete_rayservice("llm-a") is False
    with pytest.raises(KubeNotFound):
        await kube.rayservice_ready("llm-a")


async def test_list_with_label_selectors(kube):
    await kube.apply_rayservice(rayservice("llm-a"))
    await kube.apply_rayservice(rayservice("llm-b"))
    await kube.patch_rayservice("llm-b", {"metadata": {"labels": {"tier": "gold"}}})
    names = lambda items: sorted(item["metadata"]["name"] for item in items)  # noqa: E731
    assert names(await kube.list_rayservices()) == ["llm-a", "llm-b"]
    assert names(await kube.list_rayservices("foundry.dev/deployment=llm-a")) == ["llm-a"]
    assert names(await kube.list_rayservices("tier")) == ["llm-b"]
    assert names(await kube.list_rayservices("!tier,foundry.dev/deployment")) == ["llm-a"]
    assert names(await kube.list_rayservices("tier in (gold,silver)")) == ["llm-b"]


# -- failures ------------------------------------------------------------------------------------


async def test_a_wrong_token_is_a_typed_auth_error_without_the_token(api):
    wrong = "wrong-token-0123456789"
    kube = await KubeClient.connect(api.kubeconfig(token=wrong))
    try:
        with pytest.raises(KubeAuthFailed) as caught:
            await kube.inventory()
        assert wrong not in str(caught.value) and api.token not in str(caught.value)
        assert caught.value.cluster_status == 401 and caught.value.code == "cluster_auth_failed"
        health = await kube.health()
        assert (health["healthy"], health["code"]) == (False, "cluster_auth_failed")
    finally:
        await kube.aclose()


async def test_an_unreachable_server_fails_fast_and_typed(api):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again before use: nothing listens there
    kube = await KubeClient.connect(api.kubeconfig(server=f"http://127.0.0.1:{port}"), connect_timeout_s=2)
    try:
        started = time.monotonic()
        with pytest.raises(KubeUnreachable) as caught:
            await kube.apply_rayservice(rayservice())
        assert time.monotonic() - started < 3
        assert f"127.0.0.1:{port}" in str(caught.value) and api.token not in str(caught.value)
        assert (await kube.health())["healthy"] is False
    finally:
        await kube.aclose()


async def test_a_slow_answer_is_a_typed_timeout(api):
    kube = await KubeClient.connect(api.kubeconfig(), read_timeout_s=0.3)
    try:
        api.delay_next(1, seconds=2)
        started = time.monotonic()
        with pytest.raises(KubeTimeout, match="did not answer reading RayService 'llm-a' within 0.3 s"):
            await kube.get_rayservice("llm-a")
        assert time.monotonic() - started < 1.5
        assert api.requests.count(("GET", "/apis/ray.io/v1/namespaces/llm/rayservices/llm-a")) == 1  # not retried
    finally:
        await kube.aclose()


def test_tls_with_the_kubeconfigs_certificate_authority():
    async def scenario(api: FakeKubeAPI) -> None:
        kube = await KubeClient.connect(api.kubeconfig())
        try:
            assert (await kube.health())["healthy"] is True
            await kube.apply_rayservice(rayservice())
        finally:
            await kube.aclose()
        other_ca, _ = _self_signed("127.0.0.1")  # a CA that did not sign the server's certificate
        stranger = await KubeClient.connect(api.kubeconfig(ca_pem=other_ca))
        try:
            with pytest.raises(KubeUnreachable, match="TLS handshake"):
                await stranger.inventory()
        finally:
            await stranger.aclose()

    with FakeKubeAPI.running(seed=3, tls=True) as api:
        assert api.url.startswith("https://")
        asyncio.run(scenario(api))
        assert api.count("rayservices") == 1


async def test_bad_kubeconfigs_are_typed_and_do_not_echo_credentials(api):
    with pytest.raises(KubeConfigInvalid, match="not valid YAML"):
        await KubeClient.connect("clusters: [\n")
    with pytest.raises(KubeConfigInvalid, match="no context 'prod'"):
        await KubeClient.connect(api.kubeconfig(), context="prod")
    with pytest.raises(KubeConfigInvalid, match="not a DNS-1123 label"):
        await KubeClient.connect(api.kubeconfig(), namespace="../kube-system")
    with pytest.raises(KubeConfigInvalid, match="lists of named entries"):
        await KubeClient.connect("clusters: [x]\ncontexts: [x]\n")
    config = yaml.safe_load(api.kubeconfig())
    config["clusters"][0]["cluster"]["server"] = ""
    with pytest.raises(KubeConfigInvalid, match="no http\\(s\\) server URL") as caught:
        await KubeClient.connect(yaml.safe_dump(config))
    assert api.token not in str(caught.value)
    config = yaml.safe_load(api.kubeconfig())
    config["users"][0]["user"] = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "touch",
                                           "args": ["/tmp/foundry-kube-exec-ran"]}}  # fmt: skip
    with pytest.raises(KubeConfigInvalid, match="exec credential plugin"):
        await KubeClient.connect(yaml.safe_dump(config))
    config = yaml.safe_load(api.kubeconfig())
    config["contexts"][0]["context"]["cluster"] = "elsewhere"
    with pytest.raises(KubeConfigInvalid, match="cannot be used") as caught:
        await KubeClient.connect(yaml.safe_dump(config))
    assert api.token not in str(caught.value)


async def test_a_conflicting_test_op_is_a_conflict(kube):
    await kube.apply_rayservice(rayservice())
    with pytest.raises(KubeConflict):
        await kube.patch_rayservice(
            "llm-a",
            [
                {"op": "test", "path": "/spec/rayClusterConfig/workerGroupSpecs/0/groupName", "value": "cpu"},
                {"op": "replace", "path": "/spec/rayClusterConfig/workerGroupSpecs/0/replicas", "value": 2},
            ],
        )


# -- the fake behaves like the API server --------------------------------------------------------


def _sample_docs() -> list[dict]:
    if not SAMPLES.is_dir():
        return []
    docs = []
    for path in sorted(SAMPLES.glob("*.yaml")):
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc and doc["apiVersion"] == "ray.io/v1"]
    return docs


@pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"{SAMPLES} is absent (reference data)")
def test_the_fake_stores_what_admit_returns_for_every_sample(api):
    custom = raw_client(api)
    plurals = {"RayService": "rayservices", "RayCluster": "rayclusters", "RayJob": "rayjobs"}
    docs = _sample_docs()
    assert len(docs) == 8
    for doc in docs:
        stored = custom.create_namespaced_custom_object("ray.io", "v1", "llm", plurals[doc["kind"]], doc)
        expected = admit(doc)
        assert stored["spec"] == expected["spec"], doc["metadata"]["name"]
        assert stored["metadata"]["generation"] == 1 and stored["kind"] == doc["kind"]
        listing = custom.list_namespaced_custom_object("ray.io", "v1", "llm", plurals[doc["kind"]])
        assert listing["kind"] == doc["kind"] + "List"


def test_status_is_a_subresource_and_stale_writes_conflict(api):
    api.ready_after_s = 3600  # the operator only marks it Initializing during this test
    custom = raw_client(api)
    manifest = rayservice()
    manifest["status"] = {"serviceStatus": "Running"}
    created = custom.create_namespaced_custom_object("ray.io", "v1", "llm", "rayservices", manifest)
    assert "serviceStatus" not in (created.get("status") or {})  # dropped on create
    stale = created["metadata"]["resourceVersion"]
    deadline = time.monotonic() + 10
    while "status" not in api.get("rayservices", "llm-a", "llm"):  # the operator's Initializing write
        assert time.monotonic() < deadline, "the fake operator never marked it Initializing"
        time.sleep(0.02)

    current = custom.get_namespaced_custom_object("ray.io", "v1", "llm", "rayservices", "llm-a")
    current["status"] = {"serviceStatus": "Running"}
    current["metadata"]["labels"]["x"] = "y"
    written = custom.replace_namespaced_custom_object("ray.io", "v1", "llm", "rayservices", "llm-a", current)
    assert written["metadata"]["labels"]["x"] == "y"
    assert "serviceStatus" not in (written.get("status") or {})  # a main-resource write ignores status
    assert written["metadata"]["generation"] == 1  # labels are not spec

    current["metadata"]["resourceVersion"] = stale
    with pytest.raises(ApiException) as caught:
        custom.replace_namespaced_custom_object("ray.io", "v1", "llm", "rayservices", "llm-a", current)
    assert caught.value.status == 409 and "the object has been modified" in caught.value.body

    fresh = custom.get_namespaced_custom_object("ray.io", "v1", "llm", "rayservices", "llm-a")
    fresh["spec"]["serveConfigV2"] = "applications: [] # status writes ignore this\n"
    fresh["status"] = {"serviceStatus": "Running", "numServeEndpoints": 5}
    after = custom.replace_namespaced_custom_object_status("ray.io", "v1", "llm", "rayservices", "llm-a", fresh)
    assert after["status"]["numServeEndpoints"] == 5
    assert after["spec"]["serveConfigV2"] == "applications: []\n"
    assert after["metadata"]["generation"] == 1


def test_watch_streams_added_modified_deleted(api):
    custom = raw_client(api)
    custom.create_namespaced_custom_object("ray.io", "v1", "llm", "rayservices", rayservice("llm-a"))
    seen: list[tuple[str, str, str]] = []
    stream = watch.Watch().stream(
        custom.list_namespaced_custom_object,
        "ray.io",
        "v1",
        "llm",
        "rayservices",
        label_selector="foundry.dev/deployment=llm-a",
        timeout_seconds=10,
    )
    for event in stream:
        obj = event["object"]
        ready = next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == "Ready"), {})
        seen.append((event["type"], obj["metadata"]["name"], ready.get("reason", "")))
        if ready.get("status") == "True" and not any(kind == "DELETED" for kind, _, _ in seen):
            custom.delete_namespaced_custom_object("ray.io", "v1", "llm", "rayservices", "llm-a")
        if event["type"] == "DELETED":
            break
    assert seen[0][:2] == ("ADDED", "llm-a")
    assert ("MODIFIED", "llm-a", "NonZeroServeEndpoints") in seen
    assert seen[-1][:2] == ("DELETED", "llm-a")


async def _ready(kube: KubeClient, name: str) -> bool:
    return (await kube.rayservice_ready(name))[0]


async def _settled(kube: KubeClient, name: str) -> tuple[bool, str | None, str | None] | None:
    state = await kube.rayservice_ready(name)
    return state if state[1] not in (None, "Initializing") else None
