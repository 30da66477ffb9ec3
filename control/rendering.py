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
    return "rayservice", rayservice(name, config, cluster)


def rayservice(name: str, config: dict[str, Any], cluster: Cluster) -> dict[str, Any]:
    """The admitted RayService of a planned GPU configuration on ``cluster``."""
    from control.kuberay.schema import admit
    from control.targets.base import DeploySpec
    from control.targets.kuberay import KubeRayTarget

    spec = DeploySpec(deployment_id="render", name=name, runtime=config["runtime"], extra=config.get("target", {}))
    return admit(KubeRayTarget(cluster).manifest(spec))


def render_kuberay_for(model: str, **options: Any) -> dict[str, Any]:
    """The RayService for a cluster that is not registered (``--target kuberay --gpu --num-gpus``)."""
    from control.kuberay.manifests import RenderError as ManifestError
    from control.kuberay.manifests import render_for_target

    try:
        _, manifest = render_for_target(model, **{k: v for k, v in options.items() if v is not None})
    except ManifestError as exc:
        raise RenderError(exc.message) from None
    return manifest
