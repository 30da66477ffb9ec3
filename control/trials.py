"""``foundry optimize --measure --cluster C``: each trial deployed, measured, removed.

The optimizer (``tune``) measures candidates through a :class:`tune.bench.TrialDeployer`; this
one deploys a candidate with its settings (GPU type, TP/PP, replicas, ``max_num_seqs``, prefill
budget, precision) through the control API, one at a time, waits until the gateway serves it,
hands back the gateway's URL and the trial's model name, and deletes it after the measurement.
A candidate the cluster cannot hold (a GPU type it lacks, more GPUs than it has; any GPU
candidate on a CPU-only cluster) fails its trial with the deployment's reason.
"""

from __future__ import annotations

import os
import time
from typing import Any

import httpx

from tune.bench import TrialEndpoint, TrialUnavailable
from tune.search.space import NATIVE

TIMEOUT_S = 30.0
DEPLOY_TIMEOUT_S = 1800.0
POLL_S = 1.0


class ClusterDeployer:
    def __init__(self, *, cluster: str, model: str, api: str, api_key: str | None = None) -> None:
        self.cluster = cluster
        self.model = model
        self.api = api.rstrip("/")
        self.api_key = api_key or os.environ.get("FOUNDRY_API_KEY") or os.environ.get("FOUNDRY_ADMIN_KEY")
        if not self.api_key:
            from control.login import current_token

            self.api_key = current_token()
        self._deployed: dict[tuple, str] = {}

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with httpx.Client(timeout=TIMEOUT_S, headers={"Authorization": f"Bearer {self.api_key}"}) as client:
            return client.request(method, self.api + path, **kwargs)

    @staticmethod
    def _key(candidate: Any) -> tuple:
        return (candidate.gpu, candidate.tp, candidate.pp, candidate.replicas, candidate.max_num_seqs,
                candidate.max_num_batched_tokens, candidate.precision)  # fmt: skip

    def deploy(self, candidate: Any) -> TrialEndpoint:
        name = "trial-{}-tp{}-pp{}-r{}-s{}-b{}-{}".format(*self._key(candidate)).replace("_", "-")
        settings = {
            "gpu": None if candidate.gpu == "cpu" else candidate.gpu,
            "tensor_parallel_size": candidate.tp, "pipeline_parallel_size": candidate.pp,
            "max_num_seqs": candidate.max_num_seqs, "max_num_batched_tokens": candidate.max_num_batched_tokens,
        }  # fmt: skip
        if candidate.precision != NATIVE:
            settings["quantization"] = candidate.precision
        created = self._call("POST", "/deployments", json={
            "model": self.model, "cluster": self.cluster, "name": name, "replicas": candidate.replicas,
            "settings": settings, "benchmark_requests": 0,
        })  # fmt: skip
        if created.status_code >= 400:
            raise TrialUnavailable(_message(created))
        dep_id = created.json()["id"]
        self._deployed[self._key(candidate)] = dep_id
        dep = self._wait(dep_id, ("running", "failed"))
        if dep["status"] != "running":
            self.remove(candidate)  # a failed deployment keeps its row until deleted
            raise TrialUnavailable(f"cannot deploy on cluster {self.cluster!r}: {dep.get('error')}")
        return TrialEndpoint(base_url=self.api.removesuffix("/api") + "/v1", model=name, api_key=self.api_key)

    def remove(self, candidate: Any) -> None:
        dep_id = self._deployed.pop(self._key(candidate), None)
        if dep_id is None:
            return
        if self._call("DELETE", f"/deployments/{dep_id}").status_code < 400:
            self._wait(dep_id, ("deleted", "failed"))

    def _wait(self, dep_id: str, statuses: tuple[str, ...]) -> dict:
        deadline = time.monotonic() + DEPLOY_TIMEOUT_S
        while True:
            dep = self._call("GET", f"/deployments/{dep_id}").json()
            if dep.get("status") in statuses or time.monotonic() > deadline:
                return dep
            time.sleep(POLL_S)


def _message(response: httpx.Response) -> str:
    try:
        return response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return f"the control API answered {response.status_code}"
