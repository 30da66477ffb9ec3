"""Key service, the gateway's key source and the admin bootstrap, on SQLite and PostgreSQL."""

from __future__ import annotations

import pickle
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import async_sessionmaker

from control.db import create_engine, create_sessionmaker
from control.errors import AuthenticationFailed, BootstrapError, Conflict, InvalidRequest, NotFound
from control.keys import DatabaseKeySource, authenticate, bootstrap_admin, create_key, list_keys, revoke_key
from control.models import ApiKey
from control.projects import create_project, list_projects
from control.schemas import KeyCreate
from serve.auth import ApiKeyInfo, KeySource, hash_key


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker]:
    engine = create_engine(database_url, serialize_writes=True)
    yield create_sessionmaker(engine)
    await engine.dispose()


async def _all_stored_text(database_url: str) -> str:
    """Every value of every row of the key and project tables, as one string."""
    engine = create_engine(database_url)
    async with engine.connect() as conn:
        rows = [*await conn.execute(sa.text("SELECT * FROM api_keys"))]
        rows += [*await conn.execute(sa.text("SELECT * FROM projects"))]
    await engine.dispose()
    return " ".join(str(v) for row in rows for v in row)


# --- key service ---------------------------------------------------------------------------


async def test_create_returns_the_secret_once_and_stores_only_its_hash(database_url, sessions) -> None:
    async with sessions() as session:
        created = await create_key(session, KeyCreate(project="my-app", name="ci", models=["m1"], rpm=60, tpm=1000))
    assert created.key.startswith("sk-fnd-") and created.prefix == created.key[:12]
    assert (created.project, created.name, created.models, created.rpm, created.tpm) == ("my-app", "ci", ["m1"], 60, 1000)
    stored = await _all_stored_text(database_url)
    assert created.key not in stored
    assert hash_key(created.key) in stored

    async with sessions() as session:
        listed = await list_keys(session)
    assert [k.id for k in listed] == [created.id]
    dumped = listed[0].model_dump_json()
    assert created.key not in dumped and hash_key(created.key) not in dumped
    assert listed[0].prefix == created.prefix


async def test_project_is_created_when_missing_and_reused_after(sessions) -> None:
    async with sessions() as session:
        a = await create_key(session, KeyCreate(project="team-a"))
        b = await create_key(session, KeyCreate(project="team-a"))
        c = await create_key(session, KeyCreate(project="team-b"))
        names = [p.name for p in await list_projects(session)]
    assert a.project_id == b.project_id != c.project_id
    assert names.count("team-a") == 1 and "team-b" in names


async def test_list_filters_by_project_name_or_id(sessions) -> None:
    async with sessions() as session:
        a = await create_key(session, KeyCreate(project="team-a"))
        await create_key(session, KeyCreate(project="team-b"))
        assert [k.id for k in await list_keys(session, project="team-a")] == [a.id]
        assert [k.id for k in await list_keys(session, project=a.project_id)] == [a.id]
        with pytest.raises(NotFound) as caught:
            await list_keys(session, project="nobody")
    assert caught.value.param == "project"


async def test_revoke_is_recorded_idempotent_and_unknown_ids_are_not_found(sessions) -> None:
    async with sessions() as session:
        created = await create_key(session, KeyCreate(project="p"))
        revoked = await revoke_key(session, created.id)
        again = await revoke_key(session, created.id)
        with pytest.raises(NotFound):
            await revoke_key(session, "key_doesnotexist")
        with pytest.raises(AuthenticationFailed, match="revoked"):
            await authenticate(session, created.key)
    assert revoked.revoked_at is not None and again.revoked_at == revoked.revoked_at
    assert revoked.updated_at >= created.updated_at


async def test_expiry_in_days_and_past_expiry(sessions) -> None:
    async with sessions() as session:
        created = await create_key(session, KeyCreate(project="p", expires_in_days=2))
        with pytest.raises(InvalidRequest) as caught:
            await create_key(session, KeyCreate(project="p", expires_at=datetime(2000, 1, 1, tzinfo=timezone.utc)))
    remaining = created.expires_at - datetime.now(timezone.utc)
    assert timedelta(days=1, hours=23) < remaining <= timedelta(days=2)
    assert caught.value.param == "expires_at"


async def test_timestamps_come_back_aware_utc(sessions) -> None:
    async with sessions() as session:
        created = await create_key(session, KeyCreate(project="p", expires_in_days=1))
    async with sessions() as session:
        [listed] = await list_keys(session)
    for value in (listed.created_at, listed.updated_at, listed.expires_at):
        assert value.utcoffset() == timedelta(0)
    assert listed.expires_at == created.expires_at


async def test_duplicate_project_name_is_a_conflict(sessions) -> None:
    async with sessions() as session:
        await create_project(session, "dup")
        with pytest.raises(Conflict):
            await create_project(session, "dup")


# --- DatabaseKeySource ---------------------------------------------------------------------


async def test_key_source_follows_creates_and_revokes(database_url, sessions) -> None:
    source = DatabaseKeySource(database_url)
    assert isinstance(source, KeySource)
    try:
        empty = await source.fingerprint()
        assert await source.fingerprint() == empty  # unchanged without changes
        assert await source.load_active() == {}

        async with sessions() as session:
            created = await create_key(session, KeyCreate(project="p", models=["a", "b"], rpm=5, expires_in_days=1))
        after_create = await source.fingerprint()
        assert after_create != empty
        active = await source.load_active()
        info = active[hash_key(created.key)]
        assert info == ApiKeyInfo(
            key_id=created.id,
            project_id=created.project_id,
            project="p",
            is_admin=False,
            models=("a", "b"),
            rpm=5,
            tpm=None,
            expires_at=created.expires_at.timestamp(),
        )

        async with sessions() as session:
            await revoke_key(session, created.id)
        assert await source.fingerprint() not in (empty, after_create)
        assert await source.load_active() == {}
    finally:
        await source.close()


async def test_key_source_keeps_expired_keys_with_their_expiry(database_url, sessions) -> None:
    async with sessions() as session:
        created = await create_key(session, KeyCreate(project="p"))
        past = datetime.now(timezone.utc) - timedelta(hours=1)
        await session.execute(sa.update(ApiKey).where(ApiKey.id == created.id).values(expires_at=past))
        await session.commit()
    source = DatabaseKeySource(database_url)
    try:
        info = (await source.load_active())[hash_key(created.key)]
    finally:
        await source.close()
    assert info.expires_at is not None and info.expires_at < datetime.now(timezone.utc).timestamp()


async def test_key_source_pickles_before_and_after_use(database_url, sessions) -> None:
    async with sessions() as session:
        created = await create_key(session, KeyCreate(project="p"))
    source = DatabaseKeySource(database_url)
    fresh = pickle.loads(pickle.dumps(source))
    try:
        await source.load_active()  # now holds an engine, which must not travel
        used = pickle.loads(pickle.dumps(source))
        for copy in (fresh, used):
            assert hash_key(created.key) in await copy.load_active()
            assert await copy.fingerprint() == await source.fingerprint()
    finally:
        for s in (source, fresh, used):
            await s.close()


def test_key_source_is_built_without_touching_the_database(tmp_path) -> None:
    missing = tmp_path / "not-yet" / "foundry.db"
    source = DatabaseKeySource(f"sqlite:///{missing}")
    pickle.dumps(source)
    assert not missing.parent.exists()
    assert "hunter22" not in repr(DatabaseKeySource("postgresql://u:hunter22@db/foundry"))


# --- bootstrap_admin -----------------------------------------------------------------------


async def test_bootstrap_generates_an_admin_key_once(database_url, sessions) -> None:
    secret = await bootstrap_admin(database_url, None)
    assert secret is not None and secret.startswith("sk-fnd-")
    assert await bootstrap_admin(database_url, None) is None
    assert await bootstrap_admin(database_url, "") is None  # an empty $FOUNDRY_ADMIN_KEY is "not set"
    async with sessions() as session:
        key = await authenticate(session, secret)
        projects = {p.name for p in await list_projects(session)}
        admins = [k for k in await list_keys(session) if k.is_admin]
    assert key.is_admin and [a.id for a in admins] == [key.id] and admins[0].project == "admin"
    assert {"admin", "default"} <= projects
    assert secret not in await _all_stored_text(database_url)


async def test_bootstrap_stores_a_given_admin_key_once(database_url, sessions) -> None:
    given = "sk-fnd-operator-chosen-admin-key"
    assert await bootstrap_admin(database_url, given) is None
    assert await bootstrap_admin(database_url, given) is None
    async with sessions() as session:
        assert (await authenticate(session, given)).is_admin
        assert len([k for k in await list_keys(session) if k.is_admin]) == 1
    # with a given key present, nothing is generated
    assert await bootstrap_admin(database_url, None) is None


async def test_bootstrap_replaces_a_revoked_generated_key_but_refuses_a_revoked_given_one(database_url, sessions) -> None:
    first = await bootstrap_admin(database_url, None)
    async with sessions() as session:
        await revoke_key(session, (await authenticate(session, first)).id)
    second = await bootstrap_admin(database_url, None)
    assert second is not None and second != first

    given = "sk-fnd-operator-chosen-admin-key"
    await bootstrap_admin(database_url, given)
    async with sessions() as session:
        await revoke_key(session, (await authenticate(session, given)).id)
    with pytest.raises(BootstrapError, match="revoked"):
        await bootstrap_admin(database_url, given)


async def test_bootstrap_refuses_a_given_key_stored_as_a_normal_key(database_url, sessions) -> None:
    async with sessions() as session:
        created = await create_key(session, KeyCreate(project="p"))
    with pytest.raises(BootstrapError, match="non-admin"):
        await bootstrap_admin(database_url, created.key)
