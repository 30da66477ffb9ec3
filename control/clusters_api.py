"""``/clusters``: register the stack's Ray cluster or a Kubernetes cluster with KubeRay, list,
refresh and forget them (admins: ``cluster:view`` / ``cluster:manage``). A kubeconfig goes in
and never comes out."""


from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from control import clusters
from control.permissions import Access, authorize
from control.schemas import ErrorResponse

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such cluster"},
    409: {"model": ErrorResponse, "description": "The name is taken, or deployments run on it"},
    502: {"model": ErrorResponse, "description": "The Kubernetes cluster refused or failed the call"},
    503: {"model": ErrorResponse, "description": "The cluster, or the control database, is unreachable"},
    504: {"model": ErrorResponse, "description": "The Kubernetes cluster did not answer in time"},
}


class ClusterCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", description='"local", or a name for a Kubernetes cluster')
    kubeconfig: str | None = Field(default=None, max_length=1_000_000, description="the kubeconfig's text (not a path)")
    context: str | None = Field(default=None, max_length=255)
    namespace: str | None = Field(default=None, pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class ClusterPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    kind: Literal["local", "kubernetes"]
    context: str | None
    namespace: str | None
    inventory: dict[str, Any]
    operator: bool | None
    health: str
    health_reason: str | None
    refreshed_at: datetime | None
    created_at: datetime


class ClusterPage(BaseModel):
    object: Literal["list"] = "list"
    data: list[ClusterPublic]


def router(Session: Any, audit_for: Any) -> APIRouter:
    api = APIRouter(prefix="/clusters", tags=["clusters"], responses=ERRORS)

    @api.post("", response_model=ClusterPublic, status_code=201)
    async def add_cluster(
        body: ClusterCreate, session: Session, access: Annotated[Access, authorize("cluster:manage")]
    ) -> ClusterPublic:
        """`local` registers (or refreshes) the stack's own Ray cluster; any other name needs a
        kubeconfig of a Kubernetes cluster with the KubeRay operator."""
        if body.name == clusters.LOCAL and body.kubeconfig is None:
            cluster = await clusters.add_local(session, audit=audit_for(access))
        else:
            if body.kubeconfig is None:
                from control.errors import InvalidRequest

                raise InvalidRequest("a Kubernetes cluster needs its kubeconfig", param="kubeconfig", code="missing_field")
            cluster = await clusters.add_kubernetes(
                session, name=body.name, kubeconfig=body.kubeconfig, context=body.context,
                namespace=body.namespace, audit=audit_for(access),
            )  # fmt: skip
        return ClusterPublic.model_validate(cluster)

    @api.get("", response_model=ClusterPage)
    async def list_clusters(session: Session, access: Annotated[Access, authorize("cluster:view")]) -> ClusterPage:
        return ClusterPage(data=[ClusterPublic.model_validate(c) for c in await clusters.list_clusters(session)])

    @api.get("/{cluster_id}", response_model=ClusterPublic)
    async def get_cluster(
        cluster_id: str, session: Session, access: Annotated[Access, authorize("cluster:view")]
    ) -> ClusterPublic:
        """By id or name."""
        return ClusterPublic.model_validate(await clusters.get_cluster(session, cluster_id, param="cluster_id"))

    @api.post("/{cluster_id}/refresh", response_model=ClusterPublic)
    async def refresh_cluster(
        cluster_id: str, session: Session, access: Annotated[Access, authorize("cluster:manage")]
    ) -> ClusterPublic:
        """Inventory and health again (an unreachable cluster is marked unhealthy, with the reason)."""
        cluster = await clusters.get_cluster(session, cluster_id, param="cluster_id")
        return ClusterPublic.model_validate(await clusters.refresh(session, cluster))

    @api.delete("/{cluster_id}", status_code=204, responses={409: {"description": "Deployments run on it"}})
    async def delete_cluster(
        cluster_id: str, session: Session, access: Annotated[Access, authorize("cluster:manage")]
    ) -> None:
        await clusters.delete_cluster(session, cluster_id, audit=audit_for(access))

    return api
