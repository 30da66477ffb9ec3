"""The gateway's key cache: no query per request, new keys work at once, revocations follow."""

from __future__ import annotations

import asyncio
import time

import pytest

from serve.auth import new_key
from serve.gateway.errors import AuthenticationFailed, KeysUnavailable
from serve.gateway.keycache import KeyCache
from tests.fakes.keys import MemoryKeySource


async def wait_until(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)


async def test_known_key_costs_no_query():
    src = MemoryKeySource()
    k = new_key()
    src.add(k)
    cache = KeyCache(src, refresh_s=60)
    await cache.start()
    before = (src.fingerprints, src.loads)
    for _ in range(100):
        assert (await cache.authenticate(f"Bearer {k}")).project == "proj"
    assert (src.fingerprints, src.loads) == before
    await cache.close()


async def test_new_key_works_on_first_request_and_bad_keys_share_refreshes():
    src = MemoryKeySource()
    cache = KeyCache(src, refresh_s=60)
    await cache.start()
    k = new_key()
    src.add(k)
    assert (await cache.authenticate(f"Bearer {k}")).key_id == "key_" + k[-6:]
    before = src.fingerprints
    results = await asyncio.gather(*(cache.authenticate("Bearer sk-fnd-bad") for _ in range(50)), return_exceptions=True)
    assert all(isinstance(r, AuthenticationFailed) for r in results)
    assert src.fingerprints - before <= 2  # 50 concurrent misses, shared refreshes
    await cache.close()


async def test_revocation_is_picked_up_by_the_poller():
    src = MemoryKeySource()
    k = new_key()
    src.add(k)
    cache = KeyCache(src, refresh_s=0.05)
    await cache.start()
    await cache.authenticate(f"Bearer {k}")
    src.revoke(k)

    async def revoked() -> bool:
        try:
            await cache.authenticate(f"Bearer {k}")
            return False
        except AuthenticationFailed:
            return True

    deadline = time.monotonic() + 5
    while not await revoked():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    await cache.close()


@pytest.mark.parametrize(
    ("header", "code"),
    [(None, "missing_api_key"), ("", "missing_api_key"), ("Basic abc", "invalid_api_key"), ("Bearer ", "invalid_api_key")],
)
async def test_malformed_headers(header, code):
    cache = KeyCache(MemoryKeySource(), refresh_s=60)
    await cache.start()
    with pytest.raises(AuthenticationFailed) as exc:
        await cache.authenticate(header)
    assert exc.value.code == code and exc.value.status == 401
    await cache.close()


async def test_expired_key():
    src = MemoryKeySource()
    k = new_key()
    src.add(k, expires_at=time.time() - 1)
    cache = KeyCache(src, refresh_s=60)
    await cache.start()
    with pytest.raises(AuthenticationFailed) as exc:
        await cache.authenticate(f"Bearer {k}")
    assert exc.value.code == "expired_api_key"
    await cache.close()


async def test_with_the_source_down_known_keys_work_and_unknown_ones_get_503():
    src = MemoryKeySource()
    known, newer = new_key(), new_key()
    src.add(known)
    cache = KeyCache(src, refresh_s=0.05)
    await cache.start()
    src.add(newer)  # created a moment before the database went away: the cache never saw it
    src.down = True
    polls = src.fingerprints
    await wait_until(lambda: src.fingerprints >= polls + 2)  # the poller failed: the cache keeps what it has
    assert (await cache.authenticate(f"Bearer {known}")).key_id == "key_" + known[-6:]
    for secret in (newer, "sk-fnd-bad"):
        with pytest.raises(KeysUnavailable) as exc:
            await cache.authenticate(f"Bearer {secret}")
        assert (exc.value.status, exc.value.code) == (503, "keys_unavailable")
    src.down = False  # back: the next miss (or poll) loads the newer key
    assert (await cache.authenticate(f"Bearer {newer}")).key_id == "key_" + newer[-6:]
    with pytest.raises(AuthenticationFailed):
        await cache.authenticate("Bearer sk-fnd-bad")
    await cache.close()


async def test_a_key_written_while_a_refresh_is_reading_works_on_its_first_request():
    """A refresh under way read the store before the key existed; the miss must not settle for it."""
    src = MemoryKeySource()
    cache = KeyCache(src, refresh_s=60)
    await cache.start()
    gate = asyncio.Event()
    load = src.load_active

    async def slow_load():
        snapshot = await load()  # what the store holds now: before the key below
        await gate.wait()
        return snapshot

    src.load_active = slow_load
    src.version += 1  # something changed: the next refresh loads
    under_way = asyncio.ensure_future(cache.authenticate("Bearer sk-fnd-unknown"))  # a miss starts a refresh
    await wait_until(lambda: src.loads == 2)  # it has read the store
    k = new_key()
    src.add(k)  # written after that read
    src.load_active = load
    first = asyncio.ensure_future(cache.authenticate(f"Bearer {k}"))
    await asyncio.sleep(0)
    gate.set()
    assert (await first).key_id == "key_" + k[-6:]
    with pytest.raises(AuthenticationFailed):
        await under_way
    await cache.close()
