"""API keys as the gateway sees them.

The gateway never stores or compares secrets: it hashes the presented key with
:func:`hash_key` and looks the hash up in a cache filled from a :class:`KeySource`. The control
plane implements the source over its database (``control.keys.DatabaseKeySource``); the gateway
depends only on this protocol.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

KEY_PREFIX = "sk-fnd-"
DISPLAY_PREFIX_LEN = 12


def hash_key(secret: str) -> str:
    """The stored form of an API key: SHA-256, hex. Keys are 256-bit random, so no salt or KDF."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_key() -> str:
    """A fresh API key: ``sk-fnd-`` and 43 URL-safe characters (256 random bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def display_prefix(secret: str) -> str:
    """What lists show of a key."""
    return secret[:DISPLAY_PREFIX_LEN]


BudgetPeriod = Literal["day", "month"]


@dataclass(frozen=True, slots=True)
class ModelLimit:
    """Requests and tokens per minute for one key on one model, on top of the key's own limits."""

    model: str
    rpm: int | None = None
    tpm: int | None = None


@dataclass(frozen=True, slots=True)
class Budget:
    """Tokens and/or US dollars a key or project may spend per calendar period (UTC)."""

    tokens: int | None = None
    usd: float | None = None
    period: BudgetPeriod = "month"


@dataclass(frozen=True, slots=True)
class MemberLimits:
    """Limits of the key's owner in the key's project, shared by every key that owner holds there:
    a member with a budget of $20 spends at most $20 however many keys it makes. They apply on top
    of the key's own limits, so the tighter of the two admits a request.

    ``id`` names the limiter's counters (``member:<id>:...``): the same for each of the owner's
    keys in the project, never reused for another owner or project.
    """

    id: str  # "<project id>:<user id>"
    label: str  # for messages: "member alice@example.com of project 'team-a'"
    rpm: int | None = None
    tpm: int | None = None
    budget: Budget | None = None

    @property
    def limited(self) -> bool:
        return self.rpm is not None or self.tpm is not None or self.budget is not None


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """Everything the gateway needs to know about a key; the request path never asks the database.

    Limits left at their defaults cost nothing: :attr:`limited` is false and the limiter makes
    no round trip for the key.
    """

    key_id: str
    project_id: str
    project: str
    is_admin: bool = False
    models: tuple[str, ...] | None = None  # None: every model
    rpm: int | None = None
    tpm: int | None = None
    expires_at: float | None = None  # unix seconds
    model_limits: tuple[ModelLimit, ...] = ()  # at most one per model
    budget: Budget | None = None  # the key's own budget
    project_budget: Budget | None = None  # shared by every key of the project
    member: MemberLimits | None = None  # shared by every key of the owner in the project

    @property
    def limited(self) -> bool:
        """Whether any rate limit or budget applies to this key."""
        return (
            self.rpm is not None
            or self.tpm is not None
            or bool(self.model_limits)
            or self.budget is not None
            or self.project_budget is not None
            or (self.member is not None and self.member.limited)
        )

    def model_limit(self, model: str) -> ModelLimit | None:
        for limit in self.model_limits:
            if limit.model == model:
                return limit
        return None


@runtime_checkable
class KeySource(Protocol):
    """Where the gateway's key cache comes from. Must be picklable (it travels to replicas)."""

    async def fingerprint(self) -> str:
        """A cheap value that changes whenever any key is created, changed or revoked."""
        ...

    async def load_active(self) -> dict[str, ApiKeyInfo]:
        """Every active (not revoked) key, by :func:`hash_key` of its secret."""
        ...

    async def close(self) -> None: ...
