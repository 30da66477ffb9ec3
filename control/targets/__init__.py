"""Where a deployment's runtime goes: the stack's own Ray cluster, or Kubernetes through KubeRay.

Both targets do the same four things, each idempotent (the deployment pipeline runs a step at
least once, and a step re-run after a crash must not make a second application)::

    apply(spec)          -> endpoint      create or update the runtime; "already there" first
    wait_healthy(spec)                    until it serves (or a TargetError with the reason)
    drain(spec)                           until no request is in flight (bounded)
    remove(spec)                          gone; removing what is gone is fine

    local     LocalTarget     a Serve application ``runtime-dep-<id>`` next to the stack's own
    kuberay   KubeRayTarget   a ``RayService`` generated from the optimizer's choice
"""

from control.targets.base import DeploySpec, Target, TargetError
from control.targets.local import LocalTarget

__all__ = ["DeploySpec", "LocalTarget", "Target", "TargetError"]
