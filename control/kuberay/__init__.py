"""KubeRay on Kubernetes: the custom resources Foundry deploys and how they are admitted.

    control.kuberay.definitions  the pinned, trimmed KubeRay CRDs we ship (``crds/``), loading
                                 them (ours or upstream YAML) and finding a kind's schema
    control.kuberay.schema       admission as the API server does it (prune, default, validate
                                 against the structural schema) plus the operator's own rules
    control.kuberay.manifests    the optimizer's pick as a RayService (serve.endpoint on vLLM, GPU
                                 worker group, autoscaling bounds), or a Serve config for local Ray

Example:
    >>> from control.kuberay import admit
    >>> pod = {"spec": {"containers": [{"name": "ray", "image": "rayproject/ray:2.52.0"}]}}
    >>> service = admit({"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": {"name": "llm"},
    ...     "spec": {"rayClusterConfig": {"headGroupSpec": {"template": pod},
    ...         "workerGroupSpecs": [{"groupName": "gpu", "replicas": None, "template": pod}]}}})
    >>> {k: v for k, v in service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0].items() if k != "template"}
    {'groupName': 'gpu', 'replicas': 0, 'maxReplicas': 2147483647, 'minReplicas': 0, 'numOfHosts': 1, 'priority': 0}

The module that talks to a cluster is :mod:`control.kube`.
"""

from __future__ import annotations

from control.kuberay.definitions import Definitions, ResourceKind, UnknownKind, shipped
from control.kuberay.manifests import (
    NothingFits,
    RayServicePlan,
    RenderError,
    UnsupportedGPU,
    plan_for_runtime,
    plan_from_evaluation,
    rayservice_name,
    render_for_target,
    render_rayservice,
    render_serve_config,
    to_yaml,
)
from control.kuberay.schema import FieldError, ManifestInvalid, admit, admit_as, schema_for

__all__ = [
    "Definitions",
    "FieldError",
    "ManifestInvalid",
    "NothingFits",
    "RayServicePlan",
    "RenderError",
    "ResourceKind",
    "UnknownKind",
    "UnsupportedGPU",
    "admit",
    "admit_as",
    "plan_for_runtime",
    "plan_from_evaluation",
    "rayservice_name",
    "render_for_target",
    "render_rayservice",
    "render_serve_config",
    "schema_for",
    "shipped",
    "to_yaml",
]
