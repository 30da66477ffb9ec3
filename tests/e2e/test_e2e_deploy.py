"""Deployments on the local Ray cluster, as a user drives them: register the built-in model and
the local cluster, deploy through the API, chat with the new model through the gateway with
the OpenAI SDK, scale it, delete it (gone from /v1/models); and a stack SIGKILLed mid-deploy
that, restarted, finishes the deployment with one Serve application.

The stack serves no runtime of its own (only an outside model), so every runtime here is one a
deployment made.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from e2e_support import ADMIN_KEY, free_port, start_stack
from openai import OpenAI

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

CONFIG = """
[models.remote.providers.p]
type = "openai"
base_url = "http://127.0.0.1:9/v1"
"""
HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}"}
DEPLOY_TIMEOUT_S = 300


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "foundry.toml"
    path.write_text(CONFIG)
    return path


def api(stack, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, f"{stack.api_url}{path}", headers=HEADERS, timeout=60, **kwargs)


def wait_for(stack, dep_id: str, statuses: tuple[str, ...], timeout_s: float = DEPLOY_TIMEOUT_S) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        dep = api(stack, "GET", f"/deployments/{dep_id}").json()
        if dep["status"] in statuses:
            return dep
        assert time.monotonic() < deadline, f"deployment still {dep['status']} ({dep.get('step')}):\n{stack.log()}"
        time.sleep(0.5)


def listed(stack) -> list[str]:
    return [m["id"] for m in httpx.get(f"{stack.base_url}/models", headers=HEADERS, timeout=10).json()["data"]]


def runtime_apps(stack) -> dict[str, dict]:
    """The deployments' Serve applications on the local cluster (from its refreshed inventory)."""
    cluster = api(stack, "POST", "/clusters/local/refresh").json()
    return {k: v for k, v in cluster["inventory"]["applications"].items() if k.startswith("runtime-dep-")}


def register(stack) -> None:
    assert api(stack, "POST", "/clusters", json={"name": "local"}).status_code == 201
    model = api(stack, "POST", "/models", json={"source": "builtin:foundry-tiny"})
    assert model.status_code == 201, model.text
    assert model.json()["architecture"]["num_layers"] >= 1


def test_deploy_chat_scale_delete_on_the_local_cluster(tmp_path, config):
    stack = start_stack(tmp_path / "home", free_port(), config)
    try:
        register(stack)
        created = api(stack, "POST", "/deployments",
                      json={"model": "foundry-tiny", "cluster": "local", "name": "tiny-chat", "benchmark_requests": 4})
        assert created.status_code == 202, created.text
        dep = created.json()
        assert dep["status"] in ("pending", "deploying") and dep["pipeline_run_id"]
        assert set(dep) >= {"id", "name", "status", "cluster", "model", "pipeline_run_id", "config", "predicted", "measured"}

        dep = wait_for(stack, dep["id"], ("running", "failed"))
        assert dep["status"] == "running", dep
        assert "tiny-chat" in listed(stack)
        check_the_cli(stack, dep["id"])
        client = OpenAI(base_url=stack.base_url, api_key=ADMIN_KEY)
        reply = client.chat.completions.create(model="tiny-chat", messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
        assert reply.model == "tiny-chat" and reply.usage.completion_tokens >= 1
        # the benchmark step ran through the gateway and its figures sit next to the (absent) prediction
        dep = wait_for(stack, dep["id"], ("running",))
        deadline = time.monotonic() + 120
        while dep["measured"] is None and time.monotonic() < deadline:
            time.sleep(1)
            dep = api(stack, "GET", f"/deployments/{dep['id']}").json()
        assert dep["measured"]["requests_ok"] == 4 and dep["measured"]["ttft_ms"] > 0

        # a name the config file serves, or one already deployed, is refused
        taken = api(stack, "POST", "/deployments", json={"model": "foundry-tiny", "cluster": "local", "name": "remote"})
        assert taken.status_code == 409 and taken.json()["error"]["param"] == "name"
        again = api(stack, "POST", "/deployments", json={"model": "foundry-tiny", "cluster": "local", "name": "tiny-chat"})
        assert again.status_code == 409
        # the model is in use
        assert api(stack, "DELETE", "/models/foundry-tiny").status_code == 409

        scaled = api(stack, "PATCH", f"/deployments/{dep['id']}", json={"replicas": 2})
        assert scaled.status_code == 200, scaled.text
        assert scaled.json()["config"]["runtime"]["replicas"] == 2
        deadline = time.monotonic() + 180
        while (apps := runtime_apps(stack)) and next(iter(apps.values()))["replicas"] != 2:
            assert time.monotonic() < deadline, apps
            time.sleep(1)
        assert len(apps) == 1

        deleting = api(stack, "DELETE", f"/deployments/{dep['id']}")
        assert deleting.status_code == 202 and deleting.json()["status"] == "deleting"
        assert wait_for(stack, dep["id"], ("deleted", "failed"))["status"] == "deleted"
        assert "tiny-chat" not in listed(stack)
        assert runtime_apps(stack) == {}
        gone = client.chat.completions.with_raw_response  # the name is free again, and unknown to the gateway
        with pytest.raises(Exception) as refused:
            gone.create(model="tiny-chat", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
        assert getattr(refused.value, "status_code", None) == 404
        measure_trials_on_the_cluster(stack)
        assert api(stack, "DELETE", "/models/foundry-tiny").status_code in (200, 204)
    finally:
        assert stack.stop() == 0


def check_the_cli(stack, dep_id: str) -> None:
    """The CLI's contracts over the same stack."""
    import json

    import yaml

    cluster = json.loads(stack.cli("clusters", "add", "local", "--json").stdout)  # again: a refresh
    assert cluster["name"] == "local" and cluster["id"].startswith("clu_")
    assert [c["name"] for c in json.loads(stack.cli("clusters", "list", "--json").stdout)] == ["local"]
    assert "foundry-tiny" in [m["name"] for m in json.loads(stack.cli("models", "list", "--json").stdout)]
    shown = json.loads(stack.cli("deployments", "get", dep_id, "--json").stdout)
    assert {"id", "name", "status", "cluster", "model", "pipeline_run_id", "config", "predicted", "measured"} <= shown.keys()
    assert [d["id"] for d in json.loads(stack.cli("deployments", "list", "--json").stdout)] == [dep_id]
    out = stack.home.parent / "tiny.serve.yaml"
    stack.cli("deployments", "render", "foundry-tiny", "--cluster", "local", "--name", "rendered", "--out", str(out))
    apps = yaml.safe_load(out.read_text())["applications"]
    assert [a["import_path"] for a in apps] == ["serve.endpoint:build_runtime", "serve.endpoint:build"]
    assert apps[0]["args"]["runtime"]["model"] == "builtin:foundry-tiny"


def measure_trials_on_the_cluster(stack) -> None:
    """`foundry optimize --measure --cluster local`'s evaluator: a CPU candidate is deployed with
    its settings, measured through the gateway and removed; a GPU candidate cannot be placed on
    this CPU-only cluster and fails with the reason."""
    from control.trials import ClusterDeployer
    from tune.bench import BenchConfig, MeasuringEvaluator
    from tune.search.space import NATIVE, Candidate, SearchSpace

    path = api(stack, "GET", "/models/foundry-tiny").json()["path"]
    space = SearchSpace(model=path, gpus=("cpu", "l4"), num_gpus=1, isl=32, osl=8, concurrency=2,
                        slo_ttft_ms=60_000, slo_tpot_ms=10_000)  # fmt: skip
    template = BenchConfig(base_url="http://unused/v1", model=path, isl=32, osl=8, concurrency=(1,), requests=4)
    deployer = ClusterDeployer(cluster="local", model="foundry-tiny", api=stack.api_url, api_key=ADMIN_KEY)
    cpu = Candidate(gpu="cpu", tp=1, pp=1, replicas=1, max_num_seqs=4, precision=NATIVE,
                    max_num_batched_tokens=2048, genes=(0,))  # fmt: skip
    l4 = Candidate(gpu="l4", tp=1, pp=1, replicas=1, max_num_seqs=4, precision=NATIVE,
                   max_num_batched_tokens=2048, genes=(1,))  # fmt: skip
    measured, refused = MeasuringEvaluator(space, template, deployer)([cpu, l4])
    assert measured.feasible and measured.ttft_ms > 0 and measured.output_tps_per_gpu > 0, measured
    assert not refused.feasible and "no l4 GPUs" in refused.reason, refused
    left = [d["name"] for d in api(stack, "GET", "/deployments").json()["data"]]
    assert not [n for n in left if n.startswith("trial-")], left  # each trial was removed


def test_a_stack_killed_mid_deploy_finishes_it_after_a_restart_with_one_application(tmp_path, config):
    home, port = tmp_path / "home", free_port()
    first = start_stack(home, port, config)
    register(first)
    dep = api(first, "POST", "/deployments",
              json={"model": "foundry-tiny", "cluster": "local", "name": "tiny-chat", "benchmark_requests": 0}).json()
    deadline = time.monotonic() + DEPLOY_TIMEOUT_S
    while (step := api(first, "GET", f"/deployments/{dep['id']}").json().get("step")) not in ("deploy", "health"):
        assert time.monotonic() < deadline, f"never reached deploy/health:\n{first.log()}"
        time.sleep(0.2)
    os.kill(first.proc.pid, signal.SIGKILL)  # foundry up alone, mid-deploy, as the OOM killer would
    first.proc.wait(30)

    second = start_stack(home, port, config)
    try:
        done = wait_for(second, dep["id"], ("running", "failed"))
        assert done["status"] == "running", done
        assert done["pipeline_run_id"] == dep["pipeline_run_id"]  # the same run, resumed
        assert list(runtime_apps(second)) == ["runtime-" + dep["id"].replace("dep_", "dep-")]
        assert len(api(second, "GET", "/deployments").json()["data"]) == 1
        client = OpenAI(base_url=second.base_url, api_key=ADMIN_KEY)
        reply = client.chat.completions.create(model="tiny-chat", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
        assert reply.choices[0].message.content is not None
        assert step in ("deploy", "health")
    finally:
        assert second.stop() == 0
