"""Deployments on the stack's own Ray cluster: one Serve application per deployment.

``apply`` starts ``runtime-dep-<id>`` (no route prefix: the gateway reaches it by handle, like the
runtimes of the config file) without touching the stack's other applications, and returns the
gateway's provider table for it. Applying again finds it there and leaves it (a step re-run
after a crash, or an application the stack restored); ``update=True`` (scaling) changes it in
place. Health: the application is RUNNING and its runtime answers a one-token probe.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from control.targets.base import DeploySpec, TargetError
from serve.config import RuntimeConfig

_RUNTIME = TypeAdapter(RuntimeConfig)
POLL_S = 0.5
PROBE_TIMEOUT_S = 60.0


def runtime_config(table: dict[str, Any]) -> RuntimeConfig:
    try:
        return _RUNTIME.validate_python(table)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise TargetError(
            f"runtime.{'.'.join(map(str, first['loc']))}: {first['msg']}", retryable=False
        ) from None


class LocalTarget:
    def __init__(self, home: Path) -> None:
        self.home = Path(home)

    def app_name(self, spec: DeploySpec) -> str:
        from serve.providers.local import runtime_app_name

        return runtime_app_name(spec.runtime_name)

    async def apply(self, spec: DeploySpec, *, update: bool = False) -> dict[str, Any]:
        """Start the application unless it runs already (a step re-run after a crash, or one the
        stack restored); ``update`` applies a changed runtime (scaling) to a running one."""
        from ray import serve

        from serve.runtimes.deployment import build_runtime, deployment_name
        from serve.runtimes.tiny import ensure_tiny_model

        config = runtime_config(spec.runtime)
        if config.model == "builtin:foundry-tiny":
            await asyncio.to_thread(ensure_tiny_model, self.home)

        def run() -> None:
            if not update and serve.status().applications.get(self.app_name(spec)) is not None:
                return  # already there: Serve would roll its replicas for nothing
            app = build_runtime(spec.runtime_name, config, self.home)
            target = serve.RunTarget(app, name=self.app_name(spec), route_prefix=None)
            serve.run_many([target], wait_for_ingress_deployment_creation=False, wait_for_applications_running=False)

        try:
            await asyncio.to_thread(run)
        except Exception as exc:  # Serve refuses the application: the runtime table is wrong for it
            raise TargetError(f"Ray Serve refused the runtime: {exc}") from None
        return {
            "provider": {"type": "local", "runtime": spec.runtime_name},
            "deployment": deployment_name(config),
            "app": self.app_name(spec),
        }

    async def status(self, spec: DeploySpec) -> str | None:
        """The Serve application's status (RUNNING, DEPLOYING, DEPLOY_FAILED, ...), None if absent."""
        from ray import serve

        status = await asyncio.to_thread(serve.status)
        app = status.applications.get(self.app_name(spec))
        return None if app is None else str(app.status.value if hasattr(app.status, "value") else app.status)

    async def wait_healthy(self, spec: DeploySpec, *, timeout_s: float) -> None:
        from ray import serve

        deadline = time.monotonic() + timeout_s
        name = self.app_name(spec)
        while True:
            status = await asyncio.to_thread(serve.status)
            app = status.applications.get(name)
            state = None if app is None else str(getattr(app.status, "value", app.status))
            if state == "RUNNING":
                break
            if state == "DEPLOY_FAILED":
                raise TargetError(f"the Serve application {name} failed to deploy: {app.message}", retryable=False)
            if app is None:
                raise TargetError(f"the Serve application {name} does not exist (was it removed?)")
            if time.monotonic() > deadline:
                raise TargetError(f"the Serve application {name} is still {state} after {timeout_s:.0f} s")
            await asyncio.sleep(POLL_S)
        await self._probe(spec, max(1.0, min(PROBE_TIMEOUT_S, deadline - time.monotonic())))

    async def _probe(self, spec: DeploySpec, timeout_s: float) -> None:
        from ray import serve

        from serve.runtimes.deployment import deployment_name
        from serve.runtimes.engine import GenerateRequest, SamplingParams

        config = runtime_config(spec.runtime)
        handle = serve.get_deployment_handle(deployment_name(config), app_name=self.app_name(spec))
        try:
            if config.task == "embed":
                await asyncio.wait_for(handle.embed.remote(["probe"]), timeout_s)
                return
            request = GenerateRequest(
                request_id=f"probe-{spec.deployment_id}", prompt="Hello", messages=None,
                params=SamplingParams(max_tokens=1, temperature=0.0),
            )  # fmt: skip
            stream = handle.options(stream=True).generate.remote(request)
            try:
                async with asyncio.timeout(timeout_s):
                    async for _ in stream:
                        break
            finally:
                stream.cancel()
        except TimeoutError:
            raise TargetError(f"the runtime of {spec.name} did not answer a probe in {timeout_s:.0f} s") from None
        except Exception as exc:
            raise TargetError(f"the runtime of {spec.name} failed a probe: {exc}") from None

    async def drain(self, spec: DeploySpec, *, timeout_s: float) -> int:
        """Wait until the runtime holds no request; the number still in flight at the deadline."""
        from ray import serve

        from serve.runtimes.deployment import TEXT_DEPLOYMENT

        config = runtime_config(spec.runtime)
        if config.task != "generate" or await self.status(spec) is None:
            return 0
        handle = serve.get_deployment_handle(TEXT_DEPLOYMENT, app_name=self.app_name(spec))
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                pending = await asyncio.wait_for(handle.unfinished_requests.remote(), 10)
            except Exception:
                return 0  # gone, or no replica answers: nothing left to wait for
            if pending == 0 or time.monotonic() > deadline:
                return pending
            await asyncio.sleep(POLL_S)

    async def remove(self, spec: DeploySpec) -> bool:
        from ray import serve

        if await self.status(spec) is None:
            return False
        await asyncio.to_thread(serve.delete, self.app_name(spec))
        return True
