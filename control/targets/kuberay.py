"""Deployments on Kubernetes through KubeRay: one ``RayService`` per deployment.

``apply`` writes the endpoint's key Secret and the RayService (:mod:`control.kuberay.manifests`:
a GPU worker group of the chosen shape running :mod:`serve.endpoint`, our runtime on vLLM behind
the gateway's routes) with the kubeconfig the cluster was registered with; both writes are
create-or-replace, so a step re-run after a crash leaves one of each. The user's gateway reaches
the endpoint as an ``openai`` provider at the RayService's Serve service, with the key sealed in
the provider table (``api_key_encrypted``, the stack's key pair). Health is the RayService's
``Ready`` condition; its terminal reasons (``InitializingTimeout``, ``ValidationFailed``) fail the
step with the reason and the operator's message.

The key is derived from the stack's private key and the deployment id (an HMAC), so every
attempt of the step writes the same one.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from control.models import Cluster
from control.targets.base import DeploySpec, TargetError

KEY_PREFIX = "sk-fnd-ep-"


def endpoint_key(deployment_id: str) -> str:
    from control.clusters import _private_pem

    digest = hmac.new(_private_pem().encode(), f"endpoint:{deployment_id}".encode(), hashlib.sha256).hexdigest()
    return KEY_PREFIX + digest[:40]


class KubeRayTarget:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def plan(self, spec: DeploySpec):
        from control.kuberay.manifests import MODELS_MOUNT, plan_for_runtime

        runtime = dict(spec.runtime)
        model = str(runtime.get("model", ""))
        if not model.startswith(MODELS_MOUNT):  # a directory on the pods' models volume
            runtime["model"] = f"{MODELS_MOUNT}/{model.rstrip('/').rsplit('/', 1)[-1]}"
        try:
            return plan_for_runtime(
                spec.name, runtime, gpu=spec.extra["gpu"], namespace=self.cluster.namespace or "default",
                annotations={"foundry.ai/deployment": spec.deployment_id},
            )  # fmt: skip
        except Exception as exc:  # pydantic's ValidationError, RenderError: it cannot be a RayService
            raise TargetError(f"the configuration cannot be a RayService: {exc}", retryable=False) from None

    def manifest(self, spec: DeploySpec) -> dict[str, Any]:
        from control.kuberay.manifests import render_rayservice

        return render_rayservice(self.plan(spec))

    async def apply(self, spec: DeploySpec, *, update: bool = False) -> dict[str, Any]:
        """Create or replace (so scaling is the same call, with the new replicas)."""
        from control.clusters import _private_pem, kube_client
        from control.kube import KubeError
        from control.kuberay.manifests import KEY_SECRET_KEY, SERVE_PORT
        from serve.secrets import encrypt, public_key_of

        plan = self.plan(spec)
        key = endpoint_key(spec.deployment_id)
        try:
            async with await kube_client(self.cluster) as kube:
                await kube.ensure_secret(plan.secret_name, {KEY_SECRET_KEY: key},
                                         labels={"app.kubernetes.io/managed-by": "foundry"})  # fmt: skip
                await kube.apply_rayservice(self.manifest(spec))
        except KubeError as exc:
            raise TargetError(exc.message, retryable=exc.status >= 500) from None
        base_url = f"http://{plan.name}-serve-svc.{plan.namespace}.svc.cluster.local:{SERVE_PORT}/v1"
        return {
            "provider": {"type": "openai", "base_url": base_url, "api_key_encrypted": encrypt(public_key_of(_private_pem()), key)},
            "rayservice": plan.name,
            "namespace": plan.namespace,
        }

    async def wait_healthy(self, spec: DeploySpec, *, timeout_s: float) -> None:
        from control.clusters import kube_client
        from control.kube import KubeError

        name = self.plan(spec).name
        try:
            async with await kube_client(self.cluster) as kube:
                await kube.wait_rayservice_ready(name, timeout_s=timeout_s)
        except KubeError as exc:
            raise TargetError(exc.message, retryable=False) from None

    async def drain(self, spec: DeploySpec, *, timeout_s: float) -> int:
        """Nothing to wait for here: once unregistered no new request arrives, and deleting the
        RayService stops its pods gracefully (Serve finishes the requests in flight first)."""
        return 0

    async def remove(self, spec: DeploySpec) -> bool:
        from control.clusters import kube_client
        from control.kube import KubeError

        plan = self.plan(spec)
        try:
            async with await kube_client(self.cluster) as kube:
                removed = await kube.delete_rayservice(plan.name)
                await kube.delete_secret(plan.secret_name)
        except KubeError as exc:
            raise TargetError(exc.message, retryable=exc.status >= 500) from None
        return removed
