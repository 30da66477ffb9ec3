"""The audit chain's hashing and verification, on records as the API returns them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from control.audit import GENESIS, chain_hash, jsonable, verify


def chain(n: int) -> tuple[list[dict], dict]:
    records, prev = [], GENESIS
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for seq in range(1, n + 1):
        record = {
            "seq": seq, "at": (start + timedelta(seconds=seq)).isoformat().replace("+00:00", "Z"),
            "actor": "user:usr_1", "action": "key.update", "target": "key:key_1", "project_id": "proj_1",
            "request_id": f"req_{seq}", "changes": {"rpm": seq, "budget_usd": 1.5}, "prev_hash": prev,
        }  # fmt: skip
        record["hash"] = prev = chain_hash(prev, record)
        records.append(record)
    return records, {"length": n, "hash": prev}


def test_an_intact_chain_verifies_whatever_the_time_notation() -> None:
    records, head = chain(5)
    assert verify(records, head) == []
    for record in records:  # the same instant written with an offset hashes the same
        record["at"] = record["at"].replace("Z", "+00:00")
    assert verify(records, head) == []


def test_modified_deleted_and_truncated_records_are_named() -> None:
    records, head = chain(5)
    records[1]["changes"] = {"rpm": 1000}
    assert verify(records, head) == ["record 2 was modified (its hash does not match its contents)"]

    records, head = chain(5)
    del records[2]
    assert verify(records, head) == ["record 3 is missing"]

    records, head = chain(5)
    assert verify(records[:3], head) == ["the chain should have 5 records but has 3: the newest were deleted"]

    records, head = chain(5)
    forged = dict(records[3], changes={"rpm": 0})
    forged["hash"] = chain_hash(forged["prev_hash"], forged)  # re-hashed, but the next link breaks
    records[3] = forged
    assert verify(records, head) == ["record 5 does not follow record 4 (prev_hash differs)"]


def test_changes_are_stored_as_plain_json() -> None:
    when = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
    assert jsonable({"expires_at": when, "models": ("a", "b")}) == {
        "expires_at": "2026-01-01T12:00:00.000000+00:00",
        "models": ["a", "b"],
    }
