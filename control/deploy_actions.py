"""The deployment pipelines and their actions: ``model_add``, ``cluster_health``, ``deployment_*``.

``foundry up`` names this module as a plugin of the pipeline executor with its settings
(:func:`configure`: the control database, ``FOUNDRY_HOME``, the gateway's URL and a key for
it), so the actions run in the executor's process, next to DBOS. Every action takes the
deployment's id, reads the row, does its part idempotently (the step runs at least once), and
records what it did on the row::

    deployment-create (params: deployment_id)
      cluster   cluster_health          inventory and health again; fails on an unhealthy cluster
      simulate  deployment_simulate     the configuration: the optimizer's pick (GPUs) or the
                                        CPU engine's settings; the prediction          -> deploying
      deploy    deployment_deploy       the Serve application / RayService (control.targets)
      health    deployment_health       serving, or the reason it is not
      register  deployment_register     the gateway routes the name; once /v1/models lists it -> running
      benchmark deployment_benchmark    a short `foundry bench` through the gateway; measured figures,
                                        and a residual (outside the predicted interval) named and
                                        stored as a training row (on_failure: continue)

    deployment-delete (params: deployment_id)
      unregister deployment_unregister  the gateway stops routing the name           -> deleting
      drain      deployment_drain       wait for requests in flight (bounded)
      remove     deployment_remove      the application / RayService goes            -> deleted
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from control.deployments import change
from control.models import Cluster, Deployment, utcnow
from control.targets import DeploySpec, LocalTarget, TargetError
from pipelines import ActionContext, ActionError, register_action

log = logging.getLogger(__name__)

REGISTER_TIMEOUT_S = 10.0
HTTP_TIMEOUT_S = 10.0

_settings: dict[str, Any] = {}
_sessions: Any = None
_engine: Any = None


def configure(
    *,
    database_url: str,
    home: str,
    gateway_url: str | None = None,
    api_key: str | None = None,
    routes_refresh_s: float = 1.0,
) -> None:
    """Where the actions find the control database, the models, and the gateway, and how often
    the gateway's replicas read their routes (the executor calls this once, before it starts)."""
    global _sessions
    _settings.update(database_url=database_url, home=home, gateway_url=gateway_url, api_key=api_key,
                     routes_refresh_s=routes_refresh_s)  # fmt: skip
    _sessions = None


def _sessionmaker():
    global _sessions, _engine
    if _sessions is None:
        if "database_url" not in _settings:
            raise ActionError("the deployment actions are not configured (run them in foundry up's executor)",
                              retryable=False)  # fmt: skip
        from control.db import create_engine, create_sessionmaker

        _engine = create_engine(_settings["database_url"], serialize_writes=True)
        _sessions = create_sessionmaker(_engine)
    return _sessions


async def close() -> None:
    """Close the control database's connections (the executor stops; a test ends)."""
    global _sessions, _engine
    engine, _engine, _sessions = _engine, None, None
    if engine is not None:
        await engine.dispose()


class _DeploymentParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    deployment_id: str


class _TimedParams(_DeploymentParams):
    timeout_s: float = Field(default=900.0, gt=0)


class _BenchParams(_DeploymentParams):
    requests: int = Field(default=8, ge=0)


async def _load(session, deployment_id: str) -> Deployment:
    """The row with its model and cluster, read in a transaction that ends here: on SQLite every
    transaction holds the write lock, and the slow parts (a search, a deploy, a benchmark) must
    not keep the control API waiting."""
    dep = await session.get(Deployment, deployment_id)
    if dep is None:
        raise ActionError(f"deployment {deployment_id} does not exist", retryable=False)
    await session.refresh(dep, ["model", "cluster"])
    await session.commit()  # expire_on_commit is off: the row stays readable
    return dep


def target_for(cluster: Cluster):
    if cluster.kind == "local":
        return LocalTarget(Path(_settings["home"]))
    from control.targets.kuberay import KubeRayTarget

    return KubeRayTarget(cluster)


def spec_of(dep: Deployment) -> DeploySpec:
    config = dep.config or {}
    return DeploySpec(deployment_id=dep.id, name=dep.name, runtime=config.get("runtime", {}), extra=config.get("target", {}))


def _failed(exc: TargetError) -> ActionError:
    return ActionError(exc.message, retryable=exc.retryable)


# --- the registry -------------------------------------------------------------------------------


class _ModelAddParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="a model directory, builtin:foundry-tiny, or TYPE:MODEL of an outside provider")
    name: str | None = None
    description: str = ""
    tags: list[str] = []


async def model_add(ctx: ActionContext, params: dict) -> dict:
    """Register a model (``foundry models add`` as a step); the same name and source again is the
    same model, so a re-run step adds nothing."""
    from control.audit import Audit
    from control.errors import ControlError
    from control.registry import add_model

    async with _sessionmaker()() as session:
        try:
            model = await add_model(
                session, source=params["source"], name=params["name"], description=params["description"],
                tags=params["tags"], home=Path(_settings["home"]), created_by=f"pipeline:{ctx.run_id}",
                audit=Audit(actor=f"pipeline:{ctx.run_id}"),
            )  # fmt: skip
        except ControlError as exc:
            raise ActionError(exc.message, retryable=exc.status >= 500) from None
        return {"id": model.id, "name": model.name, "architecture": model.architecture}


# --- deployment-create ------------------------------------------------------------------------


async def cluster_health(ctx: ActionContext, params: dict) -> dict:
    from control.clusters import refresh

    async with _sessionmaker()() as session:
        dep = await _load(session, params["deployment_id"])
        cluster = await refresh(session, dep.cluster)
        if cluster.health != "healthy":
            raise ActionError(f"cluster {cluster.name!r} is unhealthy: {cluster.health_reason}")
        return {"cluster": cluster.name, "totals": cluster.inventory.get("totals", {})}


async def deployment_simulate(ctx: ActionContext, params: dict) -> dict:
    """The configuration to deploy, and what it should do; the same answer on every attempt."""
    from control.planning import PlanError, plan

    async with _sessionmaker()() as session:
        dep = await _load(session, params["deployment_id"])
        if dep.config is None:
            await ctx.progress(10)
            try:  # the search is CPU work: off the executor's event loop
                config, predicted = await asyncio.to_thread(
                    plan, dep.model, dep.cluster, dep.engine, dep.request, dep.name
                )
            except PlanError as exc:
                raise ActionError(str(exc), retryable=False) from None
            await change(session, dep, config=config, predicted=predicted, status="deploying", error=None)
        return {"config": dep.config, "predicted": dep.predicted}


async def deployment_deploy(ctx: ActionContext, params: dict) -> dict:
    async with _sessionmaker()() as session:
        dep = await _load(session, params["deployment_id"])
        if dep.status in ("deleting", "deleted"):
            raise ActionError(f"deployment {dep.id} is {dep.status}", retryable=False)
        try:
            endpoint = await target_for(dep.cluster).apply(spec_of(dep))
        except TargetError as exc:
            raise _failed(exc) from None
        if dep.endpoint != endpoint:
            await change(session, dep, endpoint=endpoint)
        return {"endpoint": endpoint}


async def deployment_health(ctx: ActionContext, params: dict) -> dict:
    async with _sessionmaker()() as session:
        dep = await _load(session, params["deployment_id"])
    started = time.monotonic()
    try:
        await target_for(dep.cluster).wait_healthy(spec_of(dep), timeout_s=params["timeout_s"])
    except TargetError as exc:
        raise _failed(exc) from None
    return {"healthy": True, "waited_s": round(time.monotonic() - started, 3)}


async def deployment_register(ctx: ActionContext, params: dict) -> dict:
    """The gateway routes the name from now on; ``running`` once it lists it (bounded wait), so a
    running deployment is one clients can call."""
    async with _sessionmaker()() as session:
        dep = await _load(session, params["deployment_id"])
        if not dep.registered:
            await change(session, dep, registered=True)
        listed = await _wait_listed(ctx, dep.name, present=True)
        if dep.status != "running":
            await change(session, dep, status="running", error=None)
        return {"model": dep.name, "listed_s": listed}


async def deployment_benchmark(ctx: ActionContext, params: dict) -> dict:
    """A short `foundry bench` through the gateway; the summary becomes ``measured``."""
    import tune

    from control.pipeline_actions import _store_rows

    if params["requests"] == 0 or not _settings.get("gateway_url"):
        return {"skipped": True}
    async with _sessionmaker()() as session:
        dep = await _load(session, params["deployment_id"])
        if dep.measured is not None:
            return {"measured": dep.measured}
        request = dep.request or {}
        concurrency = max(1, min(int(request.get("concurrency", 4)), params["requests"]))
        config = tune.BenchConfig(
            base_url=_settings["gateway_url"], model=dep.name, isl=min(int(request.get("isl", 128)), 256),
            osl=min(int(request.get("osl", 64)), 64), concurrency=(concurrency,), requests=params["requests"],
            api_key=_settings.get("api_key"), endpoint="chat", model_path=dep.model.path,
        )  # fmt: skip
        try:
            results = await tune.run_bench(config)
        except tune.TuneError as exc:
            raise ActionError(str(exc)) from None
        rows = tune.bench_rows(config, results)
        misses = await asyncio.to_thread(compare_with_prediction, rows, (dep.config or {}).get("choice", {}))
        token = hashlib.sha256(ctx.idempotency_key.encode()).hexdigest()
        stored = await _store_rows(rows, token)
        measured = _summary(rows) | {"rows_stored": stored}
        if misses:
            measured["outside_interval"] = misses
            log.warning("deployment %s measured outside its prediction: %s", dep.name, "; ".join(misses))
        await change(session, dep, measured=measured)
        return {"measured": measured}


def compare_with_prediction(rows: list[dict], choice: dict) -> list[str]:
    """Describe the measured rows as the deployment ran them (GPU type, TP/PP, precision from
    the simulate step's ``choice``) and compare each with the active predictor, in place.

    A row measured outside the predicted 10th-90th percentile interval is a residual: it is
    stored with ``outside_interval`` set like every bench row, so it is the next training row of
    ``foundry tune train --from-store``; the returned notes name it on the deployment. A CPU
    deployment has no prediction to compare with (the optimizer prices GPUs), so nothing is
    compared.
    """
    import tune.bench

    if not choice.get("gpu"):
        return []
    for row in rows:
        row.update(system=choice["gpu"], tp_size=choice.get("tp") or 1, pp_size=choice.get("pp") or 1,
                   moe_tp_size=choice.get("tp") or 1, precision=choice.get("precision") or "")  # fmt: skip
    notes = tune.bench.compare_with_prediction(rows)
    return [note for note in notes if "outside" in note]


def _summary(rows: list[dict]) -> dict:
    """The figures shown next to the prediction (the first concurrency level's row)."""
    row = rows[0] if rows else {}
    names = {"batch_size": "concurrency", "silicon_ttft_ms": "ttft_ms", "silicon_tpot_ms": "tpot_ms",
             "ttft_p90_ms": "ttft_ms_p90", "tpot_p90_ms": "tpot_ms_p90", "requests_per_s": "requests_per_s",
             "requests_ok": "requests_ok", "requests_failed": "requests_failed"}  # fmt: skip
    out = {}
    for key, name in names.items():
        value = row.get(key)
        if isinstance(value, int | float) and not (isinstance(value, float) and math.isnan(value)):
            out[name] = round(value, 3) if isinstance(value, float) else value
    return out


# --- deployment-delete ------------------------------------------------------------------------


async def deployment_unregister(ctx: ActionContext, params: dict) -> dict:
    async with _sessionmaker()() as session:
        dep = await _load(session, params["deployment_id"])
        if dep.registered or dep.status != "deleting":
            await change(session, dep, registered=False, status="deleting")
        name = dep.name
    gone = await _wait_listed(ctx, name, present=False)
    # One replica no longer lists it; the others read their routes within routes_refresh_s.
    await asyncio.sleep(2 * _settings.get("routes_refresh_s", 1.0))
    return {"model": name, "unlisted_s": gone}


async def deployment_drain(ctx: ActionContext, params: dict) -> dict:
    async with _sessionmaker()() as session:
        dep = await _load(session, params["deployment_id"])
    if dep.endpoint is None:
        return {"in_flight": 0}
    try:
        left = await target_for(dep.cluster).drain(spec_of(dep), timeout_s=params["timeout_s"])
    except TargetError as exc:
        raise _failed(exc) from None
    return {"in_flight": left}


async def deployment_remove(ctx: ActionContext, params: dict) -> dict:
    async with _sessionmaker()() as session:
        dep = await _load(session, params["deployment_id"])
        removed = False
        if dep.config is not None:
            try:
                removed = await target_for(dep.cluster).remove(spec_of(dep))
            except TargetError as exc:
                raise _failed(exc) from None
        if dep.status != "deleted":
            await change(session, dep, status="deleted", registered=False, deleted_at=utcnow())
        return {"removed": removed}


# --- the gateway, seen from outside -----------------------------------------------------------


async def _wait_listed(ctx: ActionContext, name: str, *, present: bool) -> float | None:
    """Seconds until ``GET /v1/models`` lists ``name`` (or stops listing it), None if not checked."""
    url, key = _settings.get("gateway_url"), _settings.get("api_key")
    if not url or not key:
        return None
    started = time.monotonic()
    while True:
        try:
            resp = await ctx.http.get(f"{url}/models", headers={"Authorization": f"Bearer {key}"}, timeout=HTTP_TIMEOUT_S)
            listed = resp.status_code == 200 and any(m.get("id") == name for m in resp.json().get("data", []))
            if listed == present:
                return round(time.monotonic() - started, 3)
        except Exception as exc:  # the gateway restarting: try again until the deadline
            log.debug("listing models failed: %s", exc)
        if time.monotonic() - started > REGISTER_TIMEOUT_S:
            raise ActionError(
                f"the gateway {'does not list' if present else 'still lists'} {name!r} after {REGISTER_TIMEOUT_S:.0f} s"
            )
        await asyncio.sleep(0.2)


# --- the pipelines ------------------------------------------------------------------------------


def _step(step_id: str, action: str, *, depends_on: list[str] | None = None, weight: float = 1, **extra: Any) -> dict:
    params = {"deployment_id": "{{ params.deployment_id }}"} | extra.pop("params", {})
    return {"id": step_id, "action": action, "params": params, "depends_on": depends_on or [], "weight": weight, **extra}


CREATE_PIPELINE: dict[str, Any] = {
    "name": "deployment-create",
    "parameters": {
        "deployment_id": {"type": "string", "required": True},
        "health_timeout_s": {"type": "number", "default": 900},
        "benchmark_requests": {"type": "integer", "default": 8},
    },
    "settings": {"retry": {"max_attempts": 3, "backoff_s": 2, "multiplier": 2, "max_delay_s": 30}},
    "steps": [
        _step("cluster", "cluster_health"),
        _step("simulate", "deployment_simulate", depends_on=["cluster"], weight=2),
        _step("deploy", "deployment_deploy", depends_on=["simulate"], weight=2),
        _step("health", "deployment_health", depends_on=["deploy"], weight=6,
              params={"timeout_s": "{{ params.health_timeout_s }}"}, retry={"max_attempts": 1}),
        _step("register", "deployment_register", depends_on=["health"]),
        _step("benchmark", "deployment_benchmark", depends_on=["register"], weight=3,
              params={"requests": "{{ params.benchmark_requests }}"}, on_failure="continue", retry={"max_attempts": 1}),
    ],
}  # fmt: skip

DELETE_PIPELINE: dict[str, Any] = {
    "name": "deployment-delete",
    "parameters": {
        "deployment_id": {"type": "string", "required": True},
        "drain_timeout_s": {"type": "number", "default": 120},
    },
    "settings": {"retry": {"max_attempts": 3, "backoff_s": 2, "multiplier": 2, "max_delay_s": 30}},
    "steps": [
        _step("unregister", "deployment_unregister"),
        _step("drain", "deployment_drain", depends_on=["unregister"], params={"timeout_s": "{{ params.drain_timeout_s }}"}),
        _step("remove", "deployment_remove", depends_on=["drain"]),
    ],
}  # fmt: skip


# name, function, params model, what it does
ACTIONS = (
    ("model_add", model_add, _ModelAddParams, "register a model (a directory, the built-in model, or a provider's)"),
    ("cluster_health", cluster_health, _DeploymentParams, "refresh a deployment's cluster inventory; fail if it is unhealthy"),
    ("deployment_simulate", deployment_simulate, _DeploymentParams, "choose the deployment's configuration (optimizer or given)"),
    ("deployment_deploy", deployment_deploy, _DeploymentParams, "create the Serve application or RayService (idempotent)"),
    ("deployment_health", deployment_health, _TimedParams, "wait until the deployment serves"),
    ("deployment_register", deployment_register, _DeploymentParams, "route the deployment's name in the gateway"),
    ("deployment_benchmark", deployment_benchmark, _BenchParams, "measure the deployment through the gateway"),
    ("deployment_unregister", deployment_unregister, _DeploymentParams, "stop routing the deployment's name"),
    ("deployment_drain", deployment_drain, _TimedParams, "wait for the deployment's requests in flight"),
    ("deployment_remove", deployment_remove, _DeploymentParams, "remove the Serve application or RayService"),
)  # fmt: skip
for _name, _fn, _params, _description in ACTIONS:
    register_action(_name, _fn, params=_params, description=_description)
