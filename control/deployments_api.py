"""``/deployments``: deploy a registered model on a cluster, follow it, scale it, delete it.

``POST`` writes the deployment and starts its ``deployment-create`` pipeline run (202 with the
row and ``pipeline_run_id``); ``GET`` shows it with the run's progress and current step;
``DELETE`` starts ``deployment-delete`` (202). ``POST /deployments/render`` shows what would be
deployed (the Serve config or the RayService) without deploying. Permissions:
``deployment:view`` / ``deployment:manage`` in the deployment's project (admins: everywhere,
and deployments of no project).
"""


from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel

from control import deployments as service
from control.errors import Conflict, ControlError, InvalidRequest
from control.models import Deployment, utcnow
from control.permissions import Access, authorize
from control.schemas import ErrorResponse
from control.pipelines_api import PipelinesUnavailable, control_error
from pipelines import PipelineError

RUN_TIMEOUT_S = 30.0
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such deployment, model or cluster (or not in your projects)"},
    409: {"model": ErrorResponse, "description": "The name is taken, or the deployment is busy"},
    503: {"model": ErrorResponse, "description": "The pipeline executor or the control database is unavailable"},
}


class DeploymentView(service.DeploymentPublic):
    progress: float | None = None
    step: str | None = None


class DeploymentPage(BaseModel):
    object: Literal["list"] = "list"
    data: list[DeploymentView]


class Rendered(BaseModel):
    kind: Literal["serve_config", "rayservice"]
    config: dict[str, Any]
    predicted: dict[str, Any]
    manifest: dict[str, Any]


def _pipelines(request: Request) -> Any:
    client = getattr(request.app.state, "pipelines", None)
    if client is None:
        raise PipelinesUnavailable("deployments need the pipeline executor, which this control API lacks")
    return client


async def _pipeline_id(request: Request, which: str) -> str:
    """The id of the ``deployment-create`` / ``-delete`` definition, stored once per replica."""
    from control.deploy_actions import CREATE_PIPELINE, DELETE_PIPELINE

    ids = request.app.state.__dict__.setdefault("_deployment_pipelines", {})
    if which not in ids:
        definition = CREATE_PIPELINE if which == "create" else DELETE_PIPELINE
        ids[which] = (await _pipelines(request).create_pipeline(definition))["id"]
    return ids[which]


async def _start(request: Request, which: str, params: dict) -> dict:
    try:
        return await _pipelines(request).start_run(await _pipeline_id(request, which), params)
    except PipelineError as exc:
        raise control_error(exc) from None


async def _view(request: Request, session: Any, dep: Deployment) -> DeploymentView:
    run = None
    client = getattr(request.app.state, "pipelines", None)
    if dep.pipeline_run_id and client is not None:
        try:
            run = await client.get_run(dep.pipeline_run_id)
        except (PipelineError, ControlError, TimeoutError):
            run = None
        dep = await service.follow_run(session, dep, run)
    view = DeploymentView(**service.public(dep).model_dump())
    if run is not None:
        view.progress = run.get("progress")
        running = [step_id for step_id, s in (run.get("steps") or {}).items() if s.get("status") == "running"]
        view.step = running[0] if running else None
    return view


def router(Session: Any, audit_for: Any) -> APIRouter:
    api = APIRouter(prefix="/deployments", tags=["deployments"], responses=ERRORS)
    conflict = {409: {"description": "Name taken, or the deployment is busy"}}

    async def _project_id(session: Any, access: Access, ref: str | None) -> str | None:
        from control.projects import find_project

        if ref is None:
            if access.caller.key_project_id is not None and not access.caller.is_admin:
                ref = access.caller.key_project_id
            elif access.caller.is_admin:
                return None
            else:
                raise InvalidRequest("name the project the deployment belongs to", param="project", code="missing_field")
        project = await find_project(session, ref)
        access.check(project.id, lambda: InvalidRequest(f"no project named {ref!r}", param="project"))
        return project.id

    async def _owned(session: Any, access: Access, dep_id: str) -> Deployment:
        dep = await service.get(session, dep_id)
        if dep.project_id is None:
            if not access.caller.is_admin:
                raise service.not_found(dep_id)
        else:
            access.check(dep.project_id, lambda: service.not_found(dep_id))
        return dep

    @api.post("", response_model=DeploymentView, status_code=202, responses=conflict)
    async def create_deployment(
        body: service.DeploymentCreate, request: Request, session: Session,
        access: Annotated[Access, authorize("deployment:manage")],
    ) -> DeploymentView:  # fmt: skip
        """Deploy: simulate -> deploy -> health -> register -> benchmark, as a pipeline run."""
        project_id = await _project_id(session, access, body.project)
        _pipelines(request)
        dep = await service.create(
            session, body, project_id=project_id, created_by=access.caller.actor,
            static_models=request.app.state.static_models, audit=audit_for(access),
        )  # fmt: skip
        try:
            run = await _start(request, "create", {"deployment_id": dep.id, "benchmark_requests": body.benchmark_requests})
        except ControlError as exc:
            await service.change(session, dep, status="failed", error=f"the pipeline did not start: {exc.message}")
            raise
        await service.change(session, dep, pipeline_run_id=run["id"])
        return await _view(request, session, dep)

    @api.get("", response_model=DeploymentPage)
    async def list_deployments(
        request: Request, session: Session, access: Annotated[Access, authorize("deployment:view")],
        include_deleted: Literal["true", "false"] = "false",
    ) -> DeploymentPage:  # fmt: skip
        projects = access.projects()
        rows = await service.list_deployments(session, project_ids=projects, include_deleted=include_deleted == "true")
        return DeploymentPage(data=[await _view(request, session, d) for d in rows])

    @api.get("/{deployment_id}", response_model=DeploymentView)
    async def get_deployment(
        deployment_id: str, request: Request, session: Session,
        access: Annotated[Access, authorize("deployment:view")],
    ) -> DeploymentView:  # fmt: skip
        return await _view(request, session, await _owned(session, access, deployment_id))

    @api.patch("/{deployment_id}", response_model=DeploymentView, responses=conflict)
    async def scale_deployment(
        deployment_id: str, body: service.DeploymentUpdate, request: Request, session: Session,
        access: Annotated[Access, authorize("deployment:manage")],
    ) -> DeploymentView:  # fmt: skip
        """Scale: ``replicas``, or autoscaling bounds ``min_replicas``/``max_replicas``."""
        dep = await _owned(session, access, deployment_id)
        if dep.status != "running":
            raise Conflict(f"deployment {dep.id} is {dep.status}; only a running one scales", code="deployment_busy")
        runtime = dict((dep.config or {}).get("runtime", {}))
        runtime.pop("autoscaling", None)
        runtime.pop("replicas", None)
        if body.replicas is not None and (body.min_replicas is not None or body.max_replicas is not None):
            raise InvalidRequest("give replicas or min_replicas/max_replicas, not both", param="replicas")
        if body.replicas is not None:
            runtime["replicas"] = body.replicas
        elif body.min_replicas is not None or body.max_replicas is not None:
            if runtime.get("engine") != "vllm":
                raise InvalidRequest("autoscaling bounds need the vLLM engine; give replicas", param="min_replicas")
            low = body.min_replicas if body.min_replicas is not None else 1
            high = body.max_replicas if body.max_replicas is not None else max(low, 1)
            if low > high:
                raise InvalidRequest(f"min_replicas ({low}) exceeds max_replicas ({high})", param="min_replicas")
            runtime["autoscaling"] = {"min_replicas": low, "max_replicas": high}
        else:
            raise InvalidRequest("give replicas, or min_replicas/max_replicas", param="replicas", code="missing_field")
        choice = dict((dep.config or {}).get("choice", {}))
        choice.update({k: v for k, v in body.model_dump(exclude_none=True).items()})
        if body.replicas is not None:
            choice.pop("min_replicas", None), choice.pop("max_replicas", None)
        else:
            choice.pop("replicas", None)
        config = dict(dep.config or {}) | {"runtime": runtime, "choice": choice}
        target = _target(request, dep)
        from control.targets import DeploySpec, TargetError

        spec = DeploySpec(deployment_id=dep.id, name=dep.name, runtime=runtime, extra=config.get("target", {}))
        await session.commit()  # no transaction (on SQLite: the write lock) while the target works
        try:
            await target.apply(spec, update=True)
        except TargetError as exc:
            raise ControlError(f"scaling failed: {exc.message}", code="scale_failed") from None
        dep.config, dep.version, dep.updated_at = config, dep.version + 1, utcnow()
        await audit_for(access).append(session, "deployment.scale", f"deployment:{dep.id}", project_id=dep.project_id,
                                       changes=body.model_dump(exclude_none=True))  # fmt: skip
        await session.commit()  # the change and its audit record together
        return await _view(request, session, dep)

    def _target(request: Request, dep: Deployment):
        from control.deploy_actions import target_for
        from control.targets import LocalTarget

        if dep.cluster.kind == "local":
            return LocalTarget(request.app.state.home)
        return target_for(dep.cluster)

    @api.delete("/{deployment_id}", response_model=DeploymentView, status_code=202, responses=conflict)
    async def delete_deployment(
        deployment_id: str, request: Request, session: Session,
        access: Annotated[Access, authorize("deployment:manage")],
    ) -> DeploymentView:  # fmt: skip
        """Drain and remove: unregister from the gateway, wait for requests in flight, remove."""
        dep = await _owned(session, access, deployment_id)
        view = await _view(request, session, dep)  # a failed run shows as failed first
        if dep.status in ("deleting", "deleted"):
            return view
        if dep.status in ("pending", "deploying"):
            raise Conflict(f"deployment {dep.id} is still {dep.status}; wait for it, or cancel its run first",
                           code="deployment_busy")  # fmt: skip
        run = await _start(request, "delete", {"deployment_id": dep.id})
        await service.change(session, dep, status="deleting", pipeline_run_id=run["id"])
        audit = audit_for(access)
        await audit.append(session, "deployment.delete", f"deployment:{dep.id}", project_id=dep.project_id,
                           changes={"name": dep.name})  # fmt: skip
        await session.commit()
        return await _view(request, session, dep)

    @api.post("/render", response_model=Rendered)
    async def render_deployment(
        body: service.DeploymentCreate, request: Request, session: Session,
        access: Annotated[Access, authorize("deployment:view")],
    ) -> Rendered:  # fmt: skip
        """What ``POST /deployments`` would deploy: the chosen configuration, its prediction and the
        Serve config (local cluster) or RayService manifest (Kubernetes). Nothing is deployed."""
        import asyncio

        from control.clusters import get_cluster
        from control.deployments import _model, default_engine
        from control.planning import PlanError, plan
        from control.rendering import render

        model = await _model(session, body.model)
        cluster = await get_cluster(session, body.cluster)
        engine = body.engine or default_engine(cluster)
        name = body.name or model.name
        await session.commit()  # the search takes a second or two: hold no transaction meanwhile
        try:
            config, predicted = await asyncio.to_thread(plan, model, cluster, engine, body.model_dump(), name)
            kind, manifest = render(name, config, cluster)
        except PlanError as exc:
            raise InvalidRequest(str(exc), param="model", code="no_configuration") from None
        return Rendered(kind=kind, config=config, predicted=predicted, manifest=manifest)

    return api
