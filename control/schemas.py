"""What the control API accepts and returns, kept apart from the tables in :mod:`control.models`.

``*Create`` schemas are request bodies (unknown fields are errors); ``*Public`` schemas are
responses and never carry a key hash. The secret of a key appears in exactly one schema,
:class:`KeyCreated`, returned once by ``POST /keys``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

from serve.metrics.records import UsageReport

ProjectName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$"),
    Field(description="letters, digits, '.', '_' and '-', starting with a letter or digit", examples=["my-app"]),
]


def _as_utc(value: datetime) -> datetime:
    """Naive datetimes are read as UTC."""
    try:
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    except OverflowError as exc:
        raise ValueError("datetime is out of range") from exc


def _iso_only(value: object) -> object:
    """A date-time is an ISO 8601 string (or a datetime), never a number of seconds: pydantic
    would read ``until=0.5`` as half a second after 1970."""
    if isinstance(value, int | float) or (isinstance(value, str | bytes) and _looks_numeric(value)):
        raise ValueError("expected an ISO 8601 date-time such as 2026-01-31T12:00:00Z")
    return value


def _looks_numeric(value: str | bytes) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


UTCDatetime = Annotated[datetime, BeforeValidator(_iso_only), AfterValidator(_as_utc)]
_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"  # no control characters (PostgreSQL refuses NUL in text)
ModelName = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True, pattern=_PRINTABLE)]
KeyName = Annotated[str, StringConstraints(max_length=100, pattern=_PRINTABLE)]
Ref = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
"""An id or a name in a URL: what ids and project names are made of."""
Limit = Annotated[int, Field(gt=0, le=2**31 - 1)]
BudgetTokens = Annotated[int, Field(gt=0, lt=2**63)]  # a bound floats hold exactly: 2**63 - 1 is 2**63 as one
BudgetUsd = Annotated[float, Field(gt=0, le=1e12, allow_inf_nan=False)]
BudgetPeriod = Literal["day", "month"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Response(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class RateLimits(BaseModel):
    """Limits of a key on one model, on top of the key's own ``rpm``/``tpm``."""

    # "give rpm, tpm or both", in the schema too
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                {"required": ["rpm"], "properties": {"rpm": {"type": "integer"}}},
                {"required": ["tpm"], "properties": {"tpm": {"type": "integer"}}},
            ]
        },
    )

    rpm: Limit | None = Field(default=None, description="requests per minute on this model")
    tpm: Limit | None = Field(default=None, description="tokens per minute on this model")

    @model_validator(mode="after")
    def _some_limit(self) -> RateLimits:
        if self.rpm is None and self.tpm is None:
            raise ValueError("give rpm, tpm or both")
        return self


# The JSON schema pydantic derives for a dict with constrained keys lets keys that fail the
# pattern through with any value; say exactly what is accepted.
ModelLimits = Annotated[
    dict[ModelName, RateLimits],
    Field(max_length=256),
    WithJsonSchema({
        "type": "object",
        "maxProperties": 256,
        "propertyNames": {"minLength": 1, "maxLength": 200, "pattern": _PRINTABLE},
        "additionalProperties": {"$ref": "#/components/schemas/RateLimits"},
    }),
]


class _Budget(BaseModel):
    """A budget per calendar period (UTC): tokens, US dollars, or both; omit both for none."""

    budget_tokens: BudgetTokens | None = Field(
        default=None, description="prompt + completion tokens per period; omit for no token budget"
    )
    budget_usd: BudgetUsd | None = Field(
        default=None, description="US dollars per period, at the gateway's model pricing; omit for no cost budget"
    )
    budget_period: BudgetPeriod = Field(default="month", description="'day' or 'month', calendar periods in UTC")


class ProjectCreate(_Request, _Budget):
    name: ProjectName


class ProjectUpdate(_Request, _Budget):
    """Only the fields given change; ``null`` removes a budget."""


class ProjectPublic(_Response):
    id: str
    name: str
    budget_tokens: int | None = None
    budget_usd: float | None = None
    budget_period: str = "month"
    created_at: datetime
    updated_at: datetime


ModelList = Annotated[list[ModelName], Field(min_length=1, max_length=256)]


class KeyCreate(_Request, _Budget):
    # "expires_at or expires_in_days, not both", in the schema too
    model_config = ConfigDict(
        json_schema_extra={
            "not": {
                "required": ["expires_at", "expires_in_days"],
                "properties": {"expires_at": {"type": "string"}, "expires_in_days": {"type": "number"}},
            }
        }
    )

    project: ProjectName = Field(default="default", description="project name; created if missing")
    name: KeyName | None = None
    models: ModelList | None = Field(default=None, description="models this key may use; omit for every model")
    rpm: Limit | None = Field(default=None, description="requests per minute; omit for no limit")
    tpm: Limit | None = Field(default=None, description="tokens per minute; omit for no limit")
    model_limits: ModelLimits | None = Field(
        default=None,
        description="per-model limits on top of rpm/tpm",
        examples=[{"chat-main": {"rpm": 60, "tpm": 100000}}],
    )
    expires_at: UTCDatetime | None = Field(default=None, description="ISO 8601; naive times are UTC")
    expires_in_days: Annotated[float, Field(gt=0, le=36500)] | None = None

    @model_validator(mode="after")
    def _one_expiry(self) -> KeyCreate:
        if self.expires_at is not None and self.expires_in_days is not None:
            raise ValueError("give expires_at or expires_in_days, not both")
        return self


class KeyUpdate(_Request, _Budget):
    """Only the fields given change; ``null`` removes a limit or budget (``models: null``: every
    model). ``model_limits`` replaces the whole map."""

    name: KeyName | None = None
    models: ModelList | None = None
    rpm: Limit | None = None
    tpm: Limit | None = None
    model_limits: ModelLimits | None = None


class KeyPublic(_Response):
    id: str
    project_id: str
    project: str
    owner_id: str | None = Field(default=None, description="the user the key acts for")
    name: str | None
    prefix: str = Field(description="the first characters of the key, to recognise it")
    is_admin: bool
    models: list[str] | None
    rpm: int | None
    tpm: int | None
    model_limits: dict[str, RateLimits] | None = None
    budget_tokens: int | None = None
    budget_usd: float | None = None
    budget_period: str = "month"
    expires_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime
    updated_at: datetime


class KeyCreated(KeyPublic):
    key: str = Field(description="the secret; shown only in this response")


class ModelUsagePublic(_Response):
    model: str
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None


class UsagePublic(_Response):
    """A :class:`serve.metrics.records.UsageReport` as JSON."""

    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    models: list[ModelUsagePublic]

    @classmethod
    def of(cls, report: UsageReport) -> UsagePublic:
        return cls.model_validate(report)


# Control characters and white space, spelt out: "\s" differs between Python's re, pydantic's
# regex engine and the ECMA regexes of the OpenAPI document (U+0085 is space to two of them).
_BLANK = r"\x00-\x20\x7f-\x9f\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
Email = Annotated[str, StringConstraints(min_length=3, max_length=320, pattern=rf"^[^@{_BLANK}]+@[^@{_BLANK}]+$")]
UserRef = Annotated[str, StringConstraints(min_length=1, max_length=320, pattern=rf"^[^/{_BLANK}]+$")]
RoleName = Literal["owner", "member", "viewer"]


class UserCreate(_Request):
    email: Email
    is_admin: StrictBool = False  # true or false: 0 and "yes" are 400s, as the document says


class UserUpdate(_Request):
    """Only the fields given change."""

    is_active: StrictBool | None = None
    is_admin: StrictBool | None = None


class UserPublic(_Response):
    id: str
    sub: str | None
    email: str | None
    name: str | None
    is_admin: bool = Field(description="granted in Foundry (the issuer's admin roles are added per token)")
    is_active: bool
    created_at: datetime


class ProjectRole(BaseModel):
    id: str
    name: str
    role: RoleName


class Me(BaseModel):
    """``GET /users/me``: who the caller is and what it may do."""

    id: str | None
    sub: str | None
    email: str | None
    is_admin: bool
    projects: list[ProjectRole]
    permissions: list[str]


class _MemberLimits(_Budget):
    """A member's limits in the project, shared by every key it owns there; each key's own limits
    apply as well, so the tighter one admits a request."""

    rpm: Limit | None = Field(default=None, description="requests per minute across the member's keys")
    tpm: Limit | None = Field(default=None, description="tokens per minute across the member's keys")


MEMBER_LIMIT_FIELDS = ("rpm", "tpm", "budget_tokens", "budget_usd", "budget_period")


class MemberCreate(_Request, _MemberLimits):
    """A role, and optionally limits (omitted ones stay as they are for an existing member)."""

    user: UserRef = Field(description="the user's email or OIDC sub; an unknown email is created ahead")
    role: RoleName


class MemberUpdate(_Request, _MemberLimits):
    """Only the fields given change; ``null`` removes a limit or budget."""

    role: RoleName | None = None


class MemberPublic(_Response):
    project_id: str
    user_id: str
    email: str | None
    sub: str | None
    role: RoleName
    rpm: int | None = None
    tpm: int | None = None
    budget_tokens: int | None = None
    budget_usd: float | None = None
    budget_period: str = "month"
    created_at: datetime


class AuditRecordPublic(_Response):
    seq: int
    at: datetime
    actor: str
    action: str
    target: str
    project_id: str | None
    request_id: str | None
    changes: dict
    prev_hash: str
    hash: str


class AuditChain(BaseModel):
    length: int
    hash: str


class AuditPage(BaseModel):
    object: Literal["list"] = "list"
    data: list[AuditRecordPublic]
    has_more: bool
    chain: AuditChain = Field(description="the chain's head, for `foundry audit verify`")


def _not_a_bool(value: object) -> object:
    """JSON ``true`` is not the number 1 (JSON Schema's "integer" and "number")."""
    if isinstance(value, bool):
        raise ValueError("expected a number, not a boolean")
    return value


_NOT_A_BOOL = BeforeValidator(_not_a_bool)
BenchText = Annotated[str, StringConstraints(max_length=1000)]
BenchTokens = Annotated[int, Field(ge=0, le=2**32 - 1), _NOT_A_BOOL]
BenchNumber = Annotated[float, Field(ge=0, allow_inf_nan=False), _NOT_A_BOOL]


class BenchmarkRow(BaseModel):
    """One ``foundry bench`` row in the measured-data schema (see :mod:`tune.predict.schema`);
    other keys (percentiles, predictions, notes) are stored with it as they are."""

    model_config = ConfigDict(extra="allow")

    id: BenchText | Annotated[int, _NOT_A_BOOL] | None = None
    backend: BenchText | None = None
    backend_version: BenchText | None = None
    model_path: BenchText | None = None
    system: BenchText | None = None
    precision: BenchText | None = None
    gemm_quant_mode: BenchText | None = None
    moe_quant_mode: BenchText | None = None
    isl: BenchTokens
    osl: BenchTokens
    batch_size: BenchNumber
    tp_size: BenchNumber
    pp_size: BenchNumber
    attention_dp_size: BenchNumber
    moe_tp_size: BenchNumber
    moe_ep_size: BenchNumber
    silicon_ttft_ms: BenchNumber
    silicon_tpot_ms: BenchNumber


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str


class ErrorResponse(BaseModel):
    """Every error of the control API, in OpenAI's shape."""

    error: ErrorDetail


class Health(BaseModel):
    status: str
    database: str
