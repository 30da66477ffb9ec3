"""A running Foundry stack: Ray, the metrics actor, and the Serve applications.

``foundry up`` is a thin driver over :class:`Stack`::

    stack = Stack(load_config("foundry.toml"), home=foundry_home())
    info = stack.start()          # Ray (started or joined), migrations, Serve apps
    ...
    stack.stop()                  # drain, flush metrics, shut Serve down, stop Ray if we started it

Serve applications::

    gateway          /v1    serve.gateway       (OpenAI API)
    control          /api   control.app         (projects, keys, usage; docs at /api/docs)
    runtime-<name>   -      serve.runtimes      (one per [runtimes] table, reached by handle)

Actors: ``foundry-metrics`` (the metrics store) and ``foundry-pipelines`` (the pipeline
executor, DBOS in ``$FOUNDRY_HOME/pipelines.db`` or ``[pipelines] database_url``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

import ray
from ray import serve

from control.config import FoundryConfig, ray_environment
from control.db import migrate
from control.deployment import build_control
from control.deployments import restorable, service_key
from control.keys import DatabaseKeySource, bootstrap_admin
from control.routes import DatabaseRouteSource
from control.targets import DeploySpec
from control.targets.local import runtime_config
from control.leftovers import claim, release
from pipelines.actor import ACTOR_NAME as PIPELINES_ACTOR
from pipelines.actor import PipelineExecutor, PipelinesClient
from serve.gateway.app import build_gateway
from serve.metrics.actor import ACTOR_NAME, MetricsClient, start_metrics_actor
from serve.providers.local import runtime_app_name
from serve.runtimes.deployment import build_runtime, deployment_name
from serve.runtimes.tiny import ensure_tiny_model

log = logging.getLogger(__name__)

NAMESPACE = "foundry"
READY_TIMEOUT_S = 300


@dataclass
class StackInfo:
    gateway_url: str
    control_url: str
    docs_url: str
    dashboard_url: str | None
    models: dict[str, str]  # name -> what it serves
    admin_key: str | None  # generated this run (shown once), else None
    started_ray: bool
    database_url: str
    extra: dict = field(default_factory=dict)


class Stack:
    def __init__(self, config: FoundryConfig, *, home: Path, address: str | None = None, port: int | None = None) -> None:
        self.config = config
        self.home = home
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.port = port or config.server.port
        self._started_ray = False
        self._claimed = False
        self._metrics_actor = None
        self._pipelines_actor = None

    @property
    def database_url(self) -> str:
        return self.config.database.url or f"sqlite:///{self.home / 'foundry.db'}"

    def start(self) -> StackInfo:
        self.home.mkdir(parents=True, exist_ok=True)
        # A dead stack of this home may have left Serve's HAProxy on the port: clear it, or say
        # what holds the port. (Joining a cluster: its head owns the port.)
        for cleared in claim(self.home, host=self.config.server.host, port=None if self.address else self.port):
            log.warning("cleared %s", cleared)
        self._claimed = True
        db_url = self.database_url
        asyncio.run(migrate(db_url))
        admin_key = asyncio.run(bootstrap_admin(db_url, os.environ.get("FOUNDRY_ADMIN_KEY") or None))
        if any(rt.model == "builtin:foundry-tiny" for rt in self.config.runtimes.values()):
            ensure_tiny_model(self.home)  # once, here, rather than racing in replicas
        ensure_keypair(self.home)  # seals kubeconfigs of registered clusters
        host = "127.0.0.1" if self.config.server.host in ("0.0.0.0", "::") else self.config.server.host
        base = f"http://{host}:{self.port}"
        deploy_settings = {
            "database_url": db_url, "home": str(self.home), "gateway_url": f"{base}/v1",
            "api_key": asyncio.run(service_key(db_url)), "routes_refresh_s": self.config.gateway.routes_refresh_s,
        }  # fmt: skip
        restored = asyncio.run(restorable(db_url))

        ctx = self._start_ray()
        metrics = self._start_metrics()
        # Its DBOS starts (and resumes unfinished runs) once the applications below run.
        pipelines = self._start_pipelines(deploy_settings)
        serve.start(http_options={"host": self.config.server.host, "port": self.port})

        runtime_deployments = {name: deployment_name(rt) for name, rt in self.config.runtimes.items()}
        targets = [
            serve.RunTarget(build_runtime(name, rt, self.home), name=runtime_app_name(name), route_prefix=None)
            for name, rt in self.config.runtimes.items()
        ]
        # Deployments this home made on its local cluster went with the old Ray: start them again
        # (their pipelines, if unfinished, resume and find them).
        for dep_id, dep_name, table in restored:
            spec = DeploySpec(deployment_id=dep_id, name=dep_name, runtime=table)
            runtime = runtime_config(table)
            if runtime.model == "builtin:foundry-tiny":
                ensure_tiny_model(self.home)
            app = build_runtime(spec.runtime_name, runtime, self.home)
            targets.append(serve.RunTarget(app, name=runtime_app_name(spec.runtime_name), route_prefix=None))
        targets.append(
            serve.RunTarget(
                build_control(
                    database_url=db_url, metrics=metrics, num_cpus=self.config.control.num_cpus,
                    auth=self.config.auth, pipelines=pipelines, home=str(self.home),
                    static_models=list(self.config.models),
                ),
                name="control",
                route_prefix="/api",
            )
        )
        serve.run_many(targets)
        # The gateway goes last: it resolves runtime handles when it starts.
        serve.run(
            build_gateway(
                models=dict(self.config.models),
                runtime_deployments=runtime_deployments,
                key_source=DatabaseKeySource(db_url),
                route_source=DatabaseRouteSource(db_url),  # deployments registered while the stack runs
                metrics=metrics,
                settings=self.config.gateway,
                metrics_settings=self.config.metrics,
                metrics_spool=self.home / "metrics-spool",  # rows of a killed replica are not lost
                limits=self.config.limits,
            ),
            name="gateway",
            route_prefix="/v1",
        )
        ray.get(self._pipelines_actor.ready.remote(), timeout=READY_TIMEOUT_S)

        dashboard = getattr(ctx, "dashboard_url", None)
        return StackInfo(
            gateway_url=f"{base}/v1",
            control_url=f"{base}/api",
            docs_url=f"{base}/api/docs",
            dashboard_url=f"http://{dashboard}" if dashboard else None,
            models={name: self._serves(name) for name in self.config.models},
            admin_key=admin_key,
            started_ray=self._started_ray,
            database_url=self.database_url,
        )

    def stop(self) -> None:
        """Drain and stop. The gateway goes first, while the ingress and the runtimes still run:
        its replicas finish the requests in flight (streams included) and flush their metrics.
        Then the rest of Serve, then the metrics actor closes its store."""
        if self._claimed:
            release(self.home)
        if not ray.is_initialized():
            return  # start() failed before Ray: nothing runs (and serve.shutdown would start Ray)
        try:
            try:
                serve.delete("gateway")  # blocks until its replicas have drained
            except Exception as exc:  # not deployed (a failed start), or Serve already gone
                log.warning("draining the gateway first failed: %s", exc)
            serve.shutdown()
        finally:
            if self._pipelines_actor is not None:
                try:  # running steps stop here; their runs resume at the next start
                    ray.get(self._pipelines_actor.stop.remote(), timeout=60)
                    if not self._started_ray:
                        ray.kill(self._pipelines_actor)  # detached in a joined cluster
                except Exception as exc:
                    log.error("stopping the pipeline executor failed: %s", exc)
            if self._metrics_actor is not None:
                try:
                    ray.get(self._metrics_actor.close.remote(), timeout=60)
                except Exception as exc:
                    log.error("closing the metrics store failed: %s", exc)
            if self._started_ray:
                ray.shutdown()

    # --- parts -------------------------------------------------------------------------------

    def _start_ray(self):
        env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        # the key pair that seals kubeconfigs (ensure_keypair), for the control replicas and the executor
        env.update({k: os.environ[k] for k in ("FOUNDRY_RSA_PRIVATE_KEY", "FOUNDRY_RSA_PRIVATE_KEY_PATH") if os.environ.get(k)})
        if self.address:
            # A head with token auth on refuses a driver that sends no token, and Ray's driver
            # sends one to an explicit address only in token mode. With a token at hand
            # (~/.ray/auth_token, $RAY_AUTH_TOKEN) and no RAY_AUTH_MODE set, use token mode:
            # Ray's own rule for an address it finds by itself.
            from ray._private.authentication.authentication_token_setup import (
                maybe_enable_token_auth_if_token_available,
            )

            maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
            ctx = ray.init(address=self.address, namespace=NAMESPACE, runtime_env={"env_vars": env})
        else:
            for name, value in ray_environment(self.config, self.home).items():
                os.environ.setdefault(name, value)
            ctx = ray.init(
                # "local": always a new cluster of our own. Without it Ray first tries the
                # cluster it last recorded as current, which may be long dead.
                address="local",
                namespace=NAMESPACE,
                include_dashboard=True,
                dashboard_host="127.0.0.1",
                runtime_env={"env_vars": env},
                log_to_driver=False,
            )
            self._started_ray = True
        return ctx

    def _start_metrics(self) -> MetricsClient:
        m = self.config.metrics
        path = m.path or str(self.home / "metrics")
        self._metrics_actor = start_metrics_actor(name=ACTOR_NAME, namespace=NAMESPACE, backend=m.backend, path=path, url=m.url)
        ray.get(self._metrics_actor.ready.remote(), timeout=READY_TIMEOUT_S)
        return MetricsClient(self._metrics_actor)

    @property
    def pipelines_database_url(self) -> str:
        return self.config.pipelines.database_url or f"sqlite:///{self.home / 'pipelines.db'}"

    def _start_pipelines(self, deploy_settings: dict) -> PipelinesClient:
        """The pipeline executor: one Ray actor owning DBOS. Its executor id stays the same across
        restarts of this home, so a new stack resumes the runs a killed one left unfinished.
        ``start`` waits for it to be ready after the Serve applications run: resumed deployment
        steps expect the applications the stack restores."""
        executor_id = self.config.pipelines.executor_id or pipelines_executor_id(self.home)
        options: dict = {"name": PIPELINES_ACTOR, "namespace": NAMESPACE}
        if not self._started_ray:  # a joined cluster: the executor outlives this driver if it dies
            options.update(lifetime="detached", get_if_exists=True)
        self._pipelines_actor = PipelineExecutor.options(**options).remote(
            self.pipelines_database_url, executor_id,
            {"control.pipeline_actions": {}, "control.deploy_actions": deploy_settings},
        )
        return PipelinesClient(self._pipelines_actor)

    def _serves(self, model: str) -> str:
        tasks = set()
        for pname, p in self.config.models[model].providers.items():
            if p.type == "local":
                rt = self.config.runtimes[p.runtime or model]
                tasks.add("embeddings" if rt.task == "embed" else "chat, completions")
        return ", ".join(sorted(tasks)) or "chat, completions"


def ensure_keypair(home: Path) -> None:
    """The stack's RSA key pair (sealing kubeconfigs): ``$FOUNDRY_RSA_PRIVATE_KEY[_PATH]`` if set,
    else ``<home>/rsa_private.pem``, made once (mode 0600) and named in the environment, which
    Ray passes on to the control replicas and the pipeline executor."""
    from serve.secrets import PRIVATE_KEY_ENV, PRIVATE_KEY_PATH_ENV, generate_keypair

    if os.environ.get(PRIVATE_KEY_ENV) or os.environ.get(PRIVATE_KEY_PATH_ENV):
        return
    path = home / "rsa_private.pem"
    if not path.exists():
        private_pem, _ = generate_keypair()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(private_pem)
    os.environ[PRIVATE_KEY_PATH_ENV] = str(path)


def pipelines_executor_id(home: Path) -> str:
    """``foundry-<host>-<hash of home>``: unique per stack on a shared database, stable across restarts."""
    digest = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:10]
    return f"foundry-{socket.gethostname()}-{digest}"
