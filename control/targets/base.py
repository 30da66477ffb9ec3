"""What every deployment target is given and must do (see the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class TargetError(Exception):
    """The target could not do it; the message is the reason, for users (no secrets)."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


@dataclass(frozen=True)
class DeploySpec:
    """One deployment as a target sees it."""

    deployment_id: str
    name: str  # the model name the gateway serves
    runtime: dict[str, Any]  # a [runtimes.NAME] table (serve.config.RuntimeConfig)
    extra: dict[str, Any] = field(default_factory=dict)  # target-specific (the RayService plan)

    @property
    def runtime_name(self) -> str:
        """``dep-<id>``: the runtime's name, unique per deployment, the same on every attempt."""
        return "dep-" + self.deployment_id.removeprefix("dep_")


class Target(Protocol):
    async def apply(self, spec: DeploySpec, *, update: bool = False) -> dict[str, Any]: ...

    async def wait_healthy(self, spec: DeploySpec, *, timeout_s: float) -> None: ...

    async def drain(self, spec: DeploySpec, *, timeout_s: float) -> int: ...

    async def remove(self, spec: DeploySpec) -> bool: ...
