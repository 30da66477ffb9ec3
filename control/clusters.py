"""Clusters: where deployments run, and what they have.

Two kinds:

- ``local``: the Ray cluster this stack runs on. Inventory from Ray (nodes, CPUs, GPUs,
  accelerator types, memory, and the Serve applications running); deployments become Serve
  applications next to the stack's own.
- ``kubernetes``: a cluster with the KubeRay operator, reached with a kubeconfig. Inventory from
  its nodes (allocatable ``nvidia.com/gpu``, NVIDIA GPU feature discovery labels), operator
  presence (the ``rayservices.ray.io`` CRD) and health, through :mod:`control.kube`; deployments
  become ``RayService`` objects. The kubeconfig is sealed (:func:`serve.secrets.seal`, RSA-OAEP
  around AES-GCM) with the stack's key pair before it is stored, and never returned or logged.

Every function takes an open session; the ones that change data commit before they return.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from control.audit import Audit
from control.errors import Conflict, ControlError, InvalidRequest, NotFound
from control.models import Cluster, Deployment, utcnow

LOCAL = "local"
INVENTORY_TIMEOUT_S = 30.0


class ClusterUnavailable(ControlError):
    """The cluster cannot be reached or is not usable (its reason in the message)."""

    status = 503
    type = "server_error"
    code = "cluster_unavailable"


# --- inventory -------------------------------------------------------------------------------


def local_inventory() -> dict[str, Any]:
    """What the Ray cluster this process is connected to has (blocking: call off the event loop)."""
    import ray

    nodes = []
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        resources = node.get("Resources", {})
        accelerators = sorted(k.split(":", 1)[1] for k in resources if k.startswith("accelerator_type:"))
        nodes.append({
            "name": node.get("NodeName") or node.get("NodeManagerAddress"),
            "node_id": node["NodeID"],
            "ready": True,
            "cpus": float(resources.get("CPU", 0)),
            "gpus": int(resources.get("GPU", 0)),
            "memory_bytes": int(resources.get("memory", 0)),
            "gpu_product": accelerators[0] if accelerators else None,
        })  # fmt: skip
    inventory = _with_totals(nodes)
    inventory["applications"] = _serve_applications()
    return inventory


def _serve_applications() -> dict[str, dict]:
    """The Serve applications on the cluster: status and running replicas (none if Serve is not up)."""
    from ray import serve

    try:
        status = serve.status()
    except Exception:  # Serve not started on this cluster
        return {}
    apps = {}
    for name, app in status.applications.items():
        running = sum(
            count for d in app.deployments.values() for state, count in d.replica_states.items()
            if str(getattr(state, "value", state)) == "RUNNING"
        )  # fmt: skip
        apps[name] = {"status": str(getattr(app.status, "value", app.status)), "replicas": running}
    return apps


def _with_totals(nodes: list[dict]) -> dict[str, Any]:
    by_type: dict[str, int] = {}
    for n in nodes:
        if n["gpus"] and n.get("gpu_product"):
            by_type[n["gpu_product"]] = by_type.get(n["gpu_product"], 0) + n["gpus"]
    totals = {
        "nodes": len(nodes),
        "cpus": sum(n["cpus"] for n in nodes),
        "gpus": sum(n["gpus"] for n in nodes),
        "memory_bytes": sum(n["memory_bytes"] for n in nodes),
    }
    return {"nodes": nodes, "totals": totals, "gpus_by_type": by_type}


# --- the kubeconfig, sealed ------------------------------------------------------------------


def _private_pem(environ=os.environ) -> str:
    from serve.secrets import PRIVATE_KEY_ENV, PRIVATE_KEY_PATH_ENV, PrivateKeyUnavailable

    inline = environ.get(PRIVATE_KEY_ENV, "").strip()
    if inline:
        return inline if "\n" in inline else inline.replace("\\n", "\n")
    path = environ.get(PRIVATE_KEY_PATH_ENV, "").strip()
    if path:
        return Path(path).expanduser().read_text()
    raise PrivateKeyUnavailable(
        f"storing a kubeconfig needs the stack's key pair: set ${PRIVATE_KEY_PATH_ENV} (foundry up sets it)"
    )


def seal_kubeconfig(text: str) -> str:
    from serve.secrets import public_key_of, seal

    return seal(public_key_of(_private_pem()), text)


def unseal_kubeconfig(sealed: str) -> str:
    from serve.secrets import unseal

    return unseal(sealed, private_pem=_private_pem())


async def kube_client(cluster: Cluster):
    """A :class:`control.kube.KubeClient` for a registered Kubernetes cluster (close it: ``async with``)."""
    from control.kube import KubeClient

    return await KubeClient.connect(
        unseal_kubeconfig(cluster.kubeconfig or ""), context=cluster.context, namespace=cluster.namespace
    )


# --- the service -----------------------------------------------------------------------------


async def add_local(session: AsyncSession, *, audit: Audit | None = None) -> Cluster:
    """Register (or refresh) the Ray cluster this stack runs on, named ``local``."""
    inventory = await asyncio.wait_for(asyncio.to_thread(local_inventory), INVENTORY_TIMEOUT_S)
    cluster = await session.scalar(select(Cluster).where(Cluster.name == LOCAL))
    now = utcnow()
    if cluster is None:
        cluster = Cluster(name=LOCAL, kind="local", inventory=inventory, created_at=now)
        session.add(cluster)
    elif cluster.kind != "local":
        raise Conflict("a Kubernetes cluster is already named 'local'", param="name", code="cluster_exists")
    cluster.inventory, cluster.health, cluster.health_reason, cluster.refreshed_at = inventory, "healthy", None, now
    await _commit(session, cluster, audit, "cluster.add")
    return cluster


async def add_kubernetes(
    session: AsyncSession,
    *,
    name: str,
    kubeconfig: str,
    context: str | None = None,
    namespace: str | None = None,
    audit: Audit | None = None,
) -> Cluster:
    """Register a Kubernetes cluster: it must answer and have the KubeRay operator's CRD."""
    from control.kube import KubeClient, KubeError

    if name == LOCAL:
        raise InvalidRequest("'local' names the stack's own Ray cluster; choose another name", param="name")
    if await session.scalar(select(Cluster).where(Cluster.name == name)) is not None:
        raise Conflict(f"a cluster named {name!r} already exists", param="name", code="cluster_exists")
    await session.commit()  # no transaction (on SQLite: the write lock) while the cluster answers
    try:
        async with await KubeClient.connect(kubeconfig, context=context, namespace=namespace) as client:
            inventory = await client.inventory()
            operator = await client.operator_installed()
            namespace = client.namespace
    except KubeError as exc:
        if exc.status < 500:  # the kubeconfig itself is wrong: say so as the caller's error
            raise
        raise ClusterUnavailable(f"cluster {name!r}: {exc.message}") from None
    if not operator:
        raise InvalidRequest(
            f"cluster {name!r} has no KubeRay operator (the rayservices.ray.io CRD is missing): install it first",
            param="kubeconfig", code="operator_missing",
        )  # fmt: skip
    now = utcnow()
    cluster = Cluster(
        name=name, kind="kubernetes", context=context, namespace=namespace,
        kubeconfig=seal_kubeconfig(kubeconfig), inventory=inventory, operator=True,
        health="healthy", refreshed_at=now, created_at=now,
    )  # fmt: skip
    session.add(cluster)
    await _commit(session, cluster, audit, "cluster.add")
    return cluster


async def refresh(session: AsyncSession, cluster: Cluster) -> Cluster:
    """Inventory and health again; an unreachable cluster is marked unhealthy with the reason."""
    await session.commit()  # no transaction (on SQLite: the write lock) while the cluster answers
    try:
        if cluster.kind == "local":
            cluster.inventory = await asyncio.wait_for(asyncio.to_thread(local_inventory), INVENTORY_TIMEOUT_S)
            cluster.operator = None
        else:
            from control.kube import KubeError

            try:
                async with await kube_client(cluster) as client:
                    cluster.inventory = await client.inventory()
                    cluster.operator = await client.operator_installed()
            except KubeError as exc:
                raise ClusterUnavailable(exc.message) from None
        cluster.health, cluster.health_reason = ("healthy", None) if cluster.operator is not False else (
            "unhealthy", "the KubeRay operator's rayservices.ray.io CRD is missing")
    except (ClusterUnavailable, TimeoutError) as exc:
        cluster.health, cluster.health_reason = "unhealthy", str(exc) or "timed out"
    cluster.refreshed_at = utcnow()
    await session.commit()
    return cluster


async def list_clusters(session: AsyncSession) -> list[Cluster]:
    return list(await session.scalars(select(Cluster).order_by(Cluster.created_at, Cluster.name)))


async def get_cluster(session: AsyncSession, ref: str, *, param: str = "cluster") -> Cluster:
    """By id or name; :class:`NotFound` naming ``param``."""
    cluster = await session.scalar(select(Cluster).where((Cluster.id == ref) | (Cluster.name == ref)))
    if cluster is None:
        raise NotFound(f"no cluster {ref!r}", param=param, code="cluster_not_found")
    return cluster


async def delete_cluster(session: AsyncSession, ref: str, *, audit: Audit | None = None) -> None:
    """Forget a cluster (409 while a live deployment runs on it)."""
    cluster = await get_cluster(session, ref)
    live = await session.scalar(
        select(func.count()).select_from(Deployment)
        .where(Deployment.cluster_id == cluster.id, Deployment.deleted_at.is_(None))
    )  # fmt: skip
    if live:
        raise Conflict(
            f"cluster {cluster.name!r} runs {live} deployment(s); delete them first", code="cluster_in_use"
        )
    await session.delete(cluster)
    if audit is not None:
        await audit.append(session, "cluster.delete", f"cluster:{cluster.id}", changes={"name": cluster.name})
    await session.commit()


async def _commit(session: AsyncSession, cluster: Cluster, audit: Audit | None, action: str) -> None:
    try:
        await session.flush()
        if audit is not None:
            await audit.append(
                session, action, f"cluster:{cluster.id}",
                changes={"name": cluster.name, "kind": cluster.kind, "namespace": cluster.namespace},
            )  # fmt: skip
        await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        raise Conflict(f"a cluster named {cluster.name!r} already exists", param="name", code="cluster_exists") from exc
