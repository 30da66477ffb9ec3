"""Deployments: a registered model on a cluster, served by the gateway under its name.

Creating one writes the row (``pending``) and starts the ``deployment-create`` pipeline
(:mod:`control.deploy_actions`)::

    cluster_health -> deployment_simulate -> deployment_deploy -> deployment_health
                   -> deployment_register -> deployment_benchmark

Each step updates the row (status, the chosen configuration, the prediction, the endpoint,
``registered``, the measurements); deleting runs ``deployment-delete`` (unregister, drain,
remove). A run that fails leaves the row ``failed`` with the run's error: the row follows its
run here, when it is read (:func:`follow_run`), since the steps that would record the failure are
the ones that failed.

Status::

    pending -> deploying -> running            (failed from any of them)
    running | failed -> deleting -> deleted

Every function takes an open session; the ones that change data commit before they return.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from control.audit import Audit
from control.clusters import get_cluster
from control.errors import Conflict, InvalidRequest, NotFound
from control.models import Cluster, Deployment, RegisteredModel, utcnow

LIVE = ("pending", "deploying", "running", "failed", "deleting")
ACTIVE = ("pending", "deploying", "deleting")  # a pipeline is working on it
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")


class DeploymentSettings(BaseModel):
    """Settings a deployment takes as given instead of searching (``foundry optimize --measure``
    deploys each trial this way)."""

    model_config = ConfigDict(extra="forbid")

    gpu: str | None = Field(default=None, description="the optimizer's GPU name (h100_sxm, l4, ...); none on a CPU cluster")
    tensor_parallel_size: int = Field(default=1, ge=1, le=64)
    pipeline_parallel_size: int = Field(default=1, ge=1, le=64)
    max_num_seqs: int | None = Field(default=None, ge=1, le=4096)
    max_num_batched_tokens: int | None = Field(default=None, ge=1)
    quantization: str | None = None


class DeploymentCreate(BaseModel):
    """``POST /deployments``; SLOs and workload feed the optimizer, settings given here win."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="a registered model's id or name")
    cluster: str = Field(description="a registered cluster's id or name")
    name: str | None = Field(default=None, description="the model name the gateway serves; default the model's name")
    project: str | None = Field(default=None, description="the project that owns it (default: none, admins only)")
    engine: Literal["cpu", "vllm"] | None = Field(default=None, description="default: vllm where the cluster has GPUs")
    replicas: int | None = Field(default=None, ge=1, le=64)
    max_num_seqs: int | None = Field(default=None, ge=1, le=4096)
    slo_ttft_ms: float | None = Field(default=None, gt=0)
    slo_tpot_ms: float | None = Field(default=None, gt=0)
    isl: int = Field(default=512, ge=1, le=1_000_000)
    osl: int = Field(default=128, ge=1, le=1_000_000)
    concurrency: int = Field(default=8, ge=1, le=100_000)
    settings: DeploymentSettings | None = Field(default=None, description="take these settings instead of the optimizer's search")
    pricing: dict[str, float] | None = Field(default=None, description="a [models.X.pricing] table, for the cost column")
    benchmark_requests: int = Field(default=8, ge=0, le=10_000, description="0: skip the benchmark")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.match(value):
            raise ValueError("must be 1-128 characters: letters, digits and . _ : / -, starting with a letter or digit")
        return value


class DeploymentUpdate(BaseModel):
    """``PATCH /deployments/{id}``: scale."""

    model_config = ConfigDict(extra="forbid")

    replicas: int | None = Field(default=None, ge=1, le=64)
    min_replicas: int | None = Field(default=None, ge=0, le=64)
    max_replicas: int | None = Field(default=None, ge=1, le=64)


class DeploymentPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    status: str
    cluster: str
    model: str
    project_id: str | None
    engine: str
    pipeline_run_id: str | None
    config: dict[str, Any] | None
    predicted: dict[str, Any] | None
    measured: dict[str, Any] | None
    registered: bool
    error: str | None
    version: int
    created_at: Any
    updated_at: Any


def public(dep: Deployment) -> DeploymentPublic:
    return DeploymentPublic(
        id=dep.id, name=dep.name, status=dep.status, cluster=dep.cluster.name, model=dep.model.name,
        project_id=dep.project_id, engine=dep.engine, pipeline_run_id=dep.pipeline_run_id, config=dep.config,
        predicted=dep.predicted, measured=dep.measured, registered=dep.registered, error=dep.error,
        version=dep.version, created_at=dep.created_at, updated_at=dep.updated_at,
    )  # fmt: skip


# --- the service -----------------------------------------------------------------------------


async def create(
    session: AsyncSession,
    spec: DeploymentCreate,
    *,
    project_id: str | None,
    created_by: str | None,
    static_models: set[str] = frozenset(),
    audit: Audit | None = None,
) -> Deployment:
    """The ``pending`` row; the caller starts its pipeline and records the run id."""
    model = await _model(session, spec.model)
    cluster = await get_cluster(session, spec.cluster)
    if model.kind == "provider":
        raise InvalidRequest(
            f"model {model.name!r} is served by an outside provider; only local and built-in models deploy",
            param="model", code="not_deployable",
        )  # fmt: skip
    name = spec.name or model.name
    if not _NAME.match(name):
        raise InvalidRequest(f"the model name {name!r} cannot be served as is; give --name", param="name")
    if name in static_models:
        raise Conflict(f"the gateway already serves {name!r} from its config file; choose another name",
                       param="name", code="name_taken")  # fmt: skip
    engine = spec.engine or default_engine(cluster)
    if cluster.kind == "kubernetes" and engine != "vllm":
        raise InvalidRequest("Kubernetes clusters run the vLLM engine", param="engine")
    now = utcnow()
    dep = Deployment(
        name=name, model=model, cluster=cluster, project_id=project_id, created_by=created_by, status="pending",
        engine=engine, request=spec.model_dump(exclude={"model", "cluster", "name", "project", "pricing"}),
        pricing=spec.pricing, registered=False, version=1, created_at=now, updated_at=now,
    )  # fmt: skip
    session.add(dep)
    try:
        await session.flush()
    except IntegrityError:
        await session.rollback()
        raise Conflict(f"a deployment named {name!r} already exists", param="name", code="deployment_exists") from None
    if audit is not None:
        await audit.append(
            session, "deployment.create", f"deployment:{dep.id}", project_id=project_id,
            changes={"name": name, "model": model.name, "cluster": cluster.name, "engine": engine},
        )  # fmt: skip
    await session.commit()
    return dep


def default_engine(cluster: Cluster) -> str:
    gpus = (cluster.inventory or {}).get("totals", {}).get("gpus", 0)
    return "vllm" if cluster.kind == "kubernetes" or gpus else "cpu"


async def get(session: AsyncSession, dep_id: str) -> Deployment:
    dep = await session.get(Deployment, dep_id)
    if dep is None:
        raise not_found(dep_id)
    await session.refresh(dep, ["model", "cluster"])
    return dep


def not_found(dep_id: str) -> NotFound:
    return NotFound(f"no deployment {dep_id!r}", param="deployment_id", code="deployment_not_found")


async def list_deployments(
    session: AsyncSession, *, project_ids: set[str] | None = None, include_deleted: bool = False
) -> list[Deployment]:
    query = select(Deployment).order_by(Deployment.created_at)
    if not include_deleted:
        query = query.where(Deployment.deleted_at.is_(None))
    if project_ids is not None:
        query = query.where(Deployment.project_id.in_(project_ids))
    rows = list(await session.scalars(query))
    for dep in rows:
        await session.refresh(dep, ["model", "cluster"])
    return rows


async def change(session: AsyncSession, dep: Deployment, **fields: Any) -> Deployment:
    """Set fields, bump the version, commit."""
    for key, value in fields.items():
        setattr(dep, key, value)
    dep.version += 1
    dep.updated_at = utcnow()
    await session.commit()
    return dep


async def follow_run(session: AsyncSession, dep: Deployment, run: dict | None) -> Deployment:
    """A row whose pipeline run failed or was cancelled becomes ``failed`` with the run's error."""
    if run is None or dep.status not in ACTIVE:
        return dep
    if run.get("status") in ("failed", "cancelled"):
        error = run.get("error") or f"the pipeline run {run.get('id')} {run['status']}"
        return await change(session, dep, status="failed", error=str(error)[:4000])
    return dep


async def _model(session: AsyncSession, ref: str) -> RegisteredModel:
    model = await session.scalar(select(RegisteredModel).where((RegisteredModel.id == ref) | (RegisteredModel.name == ref)))
    if model is None:
        raise NotFound(f"no model {ref!r} in the registry (foundry models add ...)", param="model", code="model_not_found")
    return model


# --- what foundry up needs ------------------------------------------------------------------

SERVICE_KEY_NAME = "foundry-deployments"


async def service_key(database_url: str) -> str:
    """A fresh gateway key for the deployment pipelines (checking registration, benchmarking),
    made at every start; the previous ones are revoked. Only its hash is stored."""
    from sqlalchemy import update

    from control.db import create_engine, create_sessionmaker
    from control.keys import ADMIN_PROJECT, create_key
    from control.models import ApiKey
    from control.schemas import KeyCreate

    engine = create_engine(database_url, serialize_writes=True, pool_size=1)
    try:
        async with create_sessionmaker(engine)() as session:
            await session.execute(
                update(ApiKey)
                .where(ApiKey.name == SERVICE_KEY_NAME, ApiKey.revoked_at.is_(None))
                .values(revoked_at=utcnow(), updated_at=utcnow())
            )  # fmt: skip
            await session.commit()
            created = await create_key(session, KeyCreate(project=ADMIN_PROJECT, name=SERVICE_KEY_NAME))
            return created.key
    finally:
        await engine.dispose()


async def restorable(database_url: str) -> list[tuple[str, str, dict]]:
    """``(deployment id, name, runtime table)`` of the live local deployments whose application
    was created (deploying or running): a new stack starts them again with its own applications
    (Ray and Serve went with the old one), and resumed pipelines find them there."""
    from control.db import create_engine, create_sessionmaker

    engine = create_engine(database_url, pool_size=1)
    try:
        async with create_sessionmaker(engine)() as session:
            rows = await session.execute(
                select(Deployment.id, Deployment.name, Deployment.config)
                .join(Cluster, Cluster.id == Deployment.cluster_id)
                .where(Cluster.kind == "local", Deployment.deleted_at.is_(None),
                       Deployment.status.in_(("deploying", "running")), Deployment.endpoint.is_not(None))
            )  # fmt: skip
            return [(r.id, r.name, (r.config or {}).get("runtime", {})) for r in rows]
    finally:
        await engine.dispose()
