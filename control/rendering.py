"""What a deployment would apply, as a file: the Serve config (local Ray cluster) or the
``RayService`` manifest (Kubernetes with KubeRay). ``foundry deployments render`` and
``POST /deployments/render`` show it; nothing is deployed.

The Serve config runs :mod:`serve.endpoint` (our runtime behind the gateway's OpenAI routes with
one key); the RayService is :mod:`control.kuberay.manifests`' rendering of the same choice, and
passes KubeRay's CRD schemas (:func:`control.kuberay.schema.admit`).
"""

from __future__ import annotations

from typing import Any

from control.models import Cluster


class RenderError(Exception):
    """Nothing can be rendered (the reason names what to change)."""


def render(name: str, config: dict[str, Any], cluster: Cluster) -> tuple[str, dict[str, Any]]:
    """``("serve_config" | "rayservice", manifest)`` for a planned configuration (:func:`control.planning.plan`)."""
    if cluster.kind == "local":
        from serve.endpoint import EndpointConfig, serve_applications

        endpoint = EndpointConfig.model_validate({"name": name, "runtime": config["runtime"]})
        return "serve_config", {"applications": serve_applications(endpoint)}
    return "rayservice", rayservice(name, config, namespace=cluster.namespace or "default")


def rayservice(name: str, config: dict[str, Any], *, namespace: str) -> dict[str, Any]:
    """The admitted RayService of a planned GPU configuration."""
    from control.kuberay.manifests import plan_from_runtime, render_rayservice
    from control.kuberay.schema import admit

    plan = plan_from_runtime(name, config["runtime"], gpu=config["target"]["gpu"], namespace=namespace)
    return admit(render_rayservice(plan))
