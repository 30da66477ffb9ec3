"""The gateway's route source over the deployments table, on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import pickle
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import async_sessionmaker

from control.db import create_engine, create_sessionmaker
from control.models import Cluster, Deployment, RegisteredModel, utcnow
from control.routes import DatabaseRouteSource
from serve.config import ModelConfig
from serve.gateway.routesource import DynamicRoute, RouteSource

OPENAI = {"provider": {"type": "openai", "base_url": "http://10.0.0.5:8000/v1", "model": "chat"}}
LOCAL = {"provider": {"type": "local", "runtime": "dep-chat"}, "deployment": "TextRuntime"}


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker]:
    engine = create_engine(database_url, serialize_writes=True)
    yield create_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
async def source(database_url: str) -> AsyncIterator[DatabaseRouteSource]:
    s = DatabaseRouteSource(database_url)
    yield s
    await s.close()


async def add(sessions, name: str, endpoint, *, registered: bool = True, pricing=None, deleted: bool = False) -> str:
    async with sessions() as session:
        dep = Deployment(
            name=name, model=RegisteredModel(name=f"m-{name}", source="builtin:foundry-tiny", kind="builtin"),
            cluster=Cluster(name=f"c-{name}", kind="local"), engine="cpu", status="running",
            endpoint=endpoint, pricing=pricing, registered=registered, deleted_at=utcnow() if deleted else None,
        )  # fmt: skip
        session.add(dep)
        await session.commit()
        return dep.id


async def change(sessions, dep_id: str, **values) -> None:
    async with sessions() as session:
        await session.execute(
            update(Deployment).where(Deployment.id == dep_id).values(**values, version=Deployment.version + 1)
        )
        await session.commit()


async def test_live_registered_deployments_become_model_tables(sessions, source, caplog):
    assert isinstance(source, RouteSource)
    oa = await add(sessions, "chat-a", OPENAI, pricing={"input_per_1m": 0.5, "output_per_1m": 1.5})
    loc = await add(sessions, "chat-b", LOCAL)
    await add(sessions, "pending", OPENAI, registered=False)
    await add(sessions, "gone", OPENAI, deleted=True)
    bad = await add(sessions, "bad", {"base_url": "http://x/v1"})  # not the endpoint contract's shape
    await add(sessions, "bad-local", {"provider": {"type": "local"}})  # no Serve deployment named
    with caplog.at_level(logging.ERROR, logger="control.routes"):
        routes = await source.load()
    assert sorted(routes) == ["chat-a", "chat-b"]
    assert routes["chat-a"] == DynamicRoute(
        table={"providers": {oa: OPENAI["provider"]}, "pricing": {"input_per_1m": 0.5, "output_per_1m": 1.5}},
        runtime_deployments={},
        origin=f"deployment {oa}",
    )
    assert routes["chat-b"].runtime_deployments == {"dep-chat": "TextRuntime"}
    assert ModelConfig.model_validate(routes["chat-b"].table).providers[loc].type == "local"  # what the gateway does
    assert f"deployment {bad} ('bad') is not routed: endpoint has no 'provider' table" in caplog.text
    assert "('bad-local') is not routed: endpoint of a local provider has no 'deployment'" in caplog.text


async def test_the_fingerprint_follows_every_change(sessions, source):
    seen = {await source.fingerprint()}
    dep = await add(sessions, "chat", OPENAI)
    seen.add(await source.fingerprint())
    assert len(seen) == 2
    assert await source.fingerprint() in seen  # stable while nothing changes
    # the same updated_at twice (one clock tick): the version sum still moves
    async with sessions() as session:
        stamp = (await session.get(Deployment, dep)).updated_at
    for values in ({"registered": False}, {"registered": True}, {"pricing": {"input_per_1m": 1.0}}, {"deleted_at": utcnow()}):
        await change(sessions, dep, **values, updated_at=stamp)
        fingerprint = await source.fingerprint()
        assert fingerprint not in seen, values
        seen.add(fingerprint)
    assert await source.load() == {}


async def test_it_travels_to_replicas_by_url_alone(database_url, sessions):
    await add(sessions, "chat", OPENAI)
    copy = pickle.loads(pickle.dumps(DatabaseRouteSource(database_url)))
    assert list(await copy.load()) == ["chat"]
    await copy.close()
    assert "DatabaseRouteSource(" in repr(copy)
