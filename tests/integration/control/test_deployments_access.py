"""Who sees and changes which deployments, clusters and models: project roles over the
deployment half of the API (the rows are written directly; no executor runs here)."""

from __future__ import annotations

import pytest

from control.db import create_engine, create_sessionmaker
from control.models import Cluster, Deployment, Project, RegisteredModel, utcnow
from tests.integration.control.test_control_identity import Team, issuer, stack, team  # noqa: F401 (fixtures)

pytestmark = pytest.mark.timeout(120)


async def _rows(database_url: str) -> dict[str, str]:
    """A model, a cluster and one running deployment in each of alpha and beta."""
    engine = create_engine(database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            from sqlalchemy import select

            projects = {p.name: p.id for p in await session.scalars(select(Project))}
            now = utcnow()
            model = RegisteredModel(name="m", source="builtin:foundry-tiny", kind="builtin", description="", tags=[],
                                    created_at=now, updated_at=now)  # fmt: skip
            cluster = Cluster(name="local", kind="local", inventory={}, health="healthy", created_at=now, updated_at=now)
            session.add_all([model, cluster])
            ids = {}
            for project in ("alpha", "beta"):
                dep = Deployment(name=f"{project}-chat", model=model, cluster=cluster, project_id=projects[project],
                                 status="running", engine="cpu", request={}, registered=True, version=1,
                                 created_at=now, updated_at=now)  # fmt: skip
                session.add(dep)
                await session.flush()
                ids[project] = dep.id
            await session.commit()
            return ids
    finally:
        await engine.dispose()


async def test_deployments_follow_project_roles(team: Team) -> None:
    ids = await _rows(team.stack.database_url)
    api = team.stack.api
    otto, vera, mike = team.headers("outsider"), team.headers("viewer"), team.headers("member")

    assert [d["id"] for d in (await api.get("/deployments", headers=otto)).json()["data"]] == [ids["beta"]]
    assert [d["id"] for d in (await api.get("/deployments", headers=vera)).json()["data"]] == [ids["alpha"]]
    assert len((await api.get("/deployments", headers=team.headers("admin"))).json()["data"]) == 2
    for method, body in (("GET", None), ("PATCH", {"replicas": 2}), ("DELETE", None)):
        response = await api.request(method, f"/deployments/{ids['alpha']}", json=body, headers=otto)
        assert response.status_code == 404 and response.json()["error"]["code"] == "deployment_not_found", response.text
    assert (await api.get(f"/deployments/{ids['alpha']}", headers=vera)).status_code == 200
    for method, body in (("PATCH", {"replicas": 2}), ("DELETE", None)):
        response = await api.request(method, f"/deployments/{ids['alpha']}", json=body, headers=vera)
        assert response.status_code == 403, response.text
    # a member may deploy, but into a project it is in: another project's name is a 400, no leak
    refused = await api.post("/deployments", json={"model": "m", "cluster": "local", "project": "beta"}, headers=mike)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "project", refused.text


async def test_clusters_are_for_admins_and_models_readable_by_every_role(team: Team) -> None:
    await _rows(team.stack.database_url)
    api = team.stack.api
    for who in ("owner", "member", "viewer"):
        assert (await api.get("/clusters", headers=team.headers(who))).status_code == 403
        assert (await api.post("/clusters", json={"name": "local"}, headers=team.headers(who))).status_code == 403
        assert (await api.get("/models", headers=team.headers(who))).status_code == 200
    assert [c["name"] for c in (await api.get("/clusters", headers=team.headers("admin"))).json()["data"]] == ["local"]
