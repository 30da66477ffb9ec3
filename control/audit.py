"""The audit log: one hash-chained record per change made through the control API.

Each record holds the time, the actor (``user:usr_...`` or ``key:key_...``), the action
(``key.create``, ``member.remove``...), the target, the project, the request id and the changed
fields (never a secret). It is written in the same transaction as the change it describes, so a
change without its record (or the reverse) is never committed.

Chaining: ``hash = sha256(canonical JSON of the record's fields and prev_hash)``, and ``seq``
counts up from 1 without gaps. The ``audit_head`` row holds the length and last hash, updated
with every record under a row lock (PostgreSQL ``SELECT ... FOR UPDATE``; SQLite writers are
serialised already). :func:`verify` recomputes the chain: a modified record breaks its own hash,
a deleted one breaks the sequence or the link of the next, and deleting the newest ones leaves a
head that no longer matches. ``foundry audit verify`` runs it over ``GET /api/audit``.

>>> first = chain_hash(GENESIS, {"seq": 1, "at": "2026-01-01T00:00:00+00:00", "actor": "system",
...     "action": "x", "target": "y", "project_id": None, "request_id": None, "changes": {}})
>>> verify([{"seq": 1, "at": "2026-01-01T00:00:00Z", "actor": "system", "action": "x",
...     "target": "y", "project_id": None, "request_id": None, "changes": {}, "prev_hash": GENESIS,
...     "hash": first}], head={"length": 1, "hash": first})
[]
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from control.models import AuditHead, AuditRecord, utcnow

GENESIS = "0" * 64
HASHED_FIELDS = ("seq", "at", "actor", "action", "target", "project_id", "request_id", "changes")


@dataclass(frozen=True)
class Audit:
    """Who is acting in this request: what the service functions record their changes as."""

    actor: str
    request_id: str | None = None

    async def append(
        self, session: AsyncSession, action: str, target: str, *, project_id: str | None = None, changes: dict
    ) -> AuditRecord:
        return await append(
            session, actor=self.actor, action=action, target=target, project_id=project_id, changes=changes,
            request_id=self.request_id,
        )


async def append(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    target: str,
    changes: dict,
    project_id: str | None = None,
    request_id: str | None = None,
) -> AuditRecord:
    """Add one record to the chain in ``session``'s transaction; the caller commits."""
    head = await session.scalar(select(AuditHead).where(AuditHead.id == 1).with_for_update())
    if head is None:
        raise RuntimeError("the audit_head row is missing; run the control database migrations")
    record = AuditRecord(
        seq=head.length + 1,
        at=utcnow(),
        actor=actor,
        action=action,
        target=target,
        project_id=project_id,
        request_id=request_id,
        changes=jsonable(changes),
        prev_hash=head.hash,
    )
    record.hash = chain_hash(head.hash, _fields(record))
    head.length, head.hash = record.seq, record.hash
    session.add(record)
    return record


async def head(session: AsyncSession) -> dict:
    row = await session.get(AuditHead, 1)
    return {"length": row.length, "hash": row.hash} if row is not None else {"length": 0, "hash": GENESIS}


def chain_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    """The hash of a record with ``fields`` (see :data:`HASHED_FIELDS`) following ``prev_hash``."""
    canonical = {name: fields.get(name) for name in HASHED_FIELDS}
    canonical["at"] = _canonical_time(canonical["at"])
    canonical["prev_hash"] = prev_hash
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def verify(records: list[dict[str, Any]], head: dict[str, Any] | None) -> list[str]:
    """Problems found in ``records`` (every record, oldest first) against ``head``; [] if none."""
    problems: list[str] = []
    prev_hash, expected_seq = GENESIS, 1
    for record in records:
        seq = record["seq"]
        if seq != expected_seq:
            problems.append(f"record {expected_seq}{'' if seq == expected_seq + 1 else f'..{seq - 1}'} is missing")
        elif record["prev_hash"] != prev_hash:
            problems.append(f"record {seq} does not follow record {seq - 1} (prev_hash differs)")
        if chain_hash(record["prev_hash"], record) != record["hash"]:
            problems.append(f"record {seq} was modified (its hash does not match its contents)")
        prev_hash, expected_seq = record["hash"], seq + 1
    if head is not None:
        if head["length"] != expected_seq - 1:
            problems.append(
                f"the chain should have {head['length']} records but has {expected_seq - 1}: the newest were deleted"
            )
        elif head["hash"] != prev_hash:
            problems.append("the last record's hash does not match the chain head")
    return problems


def jsonable(value: Any) -> Any:
    """``value`` with datetimes as ISO strings, so it is stored and hashed the same everywhere."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return _canonical_time(value)
    if isinstance(value, Decimal):
        return float(value)
    return value


def _fields(record: AuditRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in HASHED_FIELDS}


def _canonical_time(value: datetime | str) -> str:
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.astimezone(timezone.utc).isoformat(timespec="microseconds")
