"""The model registry over the control API (:mod:`control.registry` does the work).

    POST   /api/models          {"source": "/models/Llama-3.1-8B-Instruct", "name": "llama-8b", "tags": ["chat"]}
                                {"source": "builtin:foundry-tiny"}
                                {"source": "openai:gpt-4o-mini", "provider": {"api_key_env": "OPENAI_KEY"}}
                                {"provider": {"type": "together", "model": "meta-llama/Llama-3.3-70B-Instruct-Turbo"}}
    GET    /api/models[?tag=chat]
    GET    /api/models/{id or name}
    PATCH  /api/models/{id or name}   {"description": "...", "tags": [...]}
    DELETE /api/models/{id or name}   (409 while a live deployment uses it)

Reads need ``model:view`` (every role), writes ``model:manage`` (admins); every write leaves an
audit record (``model.create``, ``model.update``, ``model.delete``) in its own transaction.
A name may hold '/' (``meta-llama/Llama-3.1-8B``): the routes take the rest of the path.
The app includes :func:`router` (see :func:`control.app.create_app`).
"""

# No `from __future__ import annotations`: FastAPI must see the `Session` type that router() is given.
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field, model_validator

from control import registry
from control.audit import Audit
from control.errors import InvalidRequest
from control.models import RegisteredModel
from control.permissions import Access, authorize
from control.schemas import ErrorResponse
from serve.config import PROVIDER_TYPES

__all__ = ["ModelCreate", "ModelPage", "ModelPublic", "ModelUpdate", "router"]

_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
Tag = Annotated[str, Field(min_length=1, max_length=registry.MAX_TAG, pattern=r"^[^\x00-\x1f\x7f,]+$")]
Description = Annotated[str, Field(max_length=registry.MAX_DESCRIPTION, pattern=r"^[^\x00-\x08\x0b-\x1f\x7f]*$")]


class ModelCreate(BaseModel):
    """A model to register: ``source``, or a provider table (``type`` and ``model``) alone."""

    model_config = ConfigDict(extra="forbid")

    source: str | None = Field(
        default=None, min_length=1, max_length=1024, pattern=_PRINTABLE,
        description="an absolute path to a model directory, builtin:foundry-tiny, or TYPE:MODEL with TYPE one of "
        + ", ".join(PROVIDER_TYPES),
        examples=["builtin:foundry-tiny", "/models/Llama-3.1-8B-Instruct", "openai:gpt-4o-mini"],
    )  # fmt: skip
    name: str | None = Field(
        default=None, min_length=1, max_length=registry.MAX_NAME, pattern=registry.NAME_PATTERN,
        description="default: the directory's name, foundry-tiny, or the provider's model id",
    )  # fmt: skip
    description: Description = ""
    tags: list[Tag] = Field(default=[], max_length=registry.MAX_TAGS)
    provider: dict[str, Any] | None = Field(
        default=None,
        description="the rest of a [models.X.providers.Y] table for a provider model (base_url, api_key_env, ...)",
    )

    @model_validator(mode="after")
    def _source_or_provider(self) -> "ModelCreate":
        if self.source is None and self.provider is None:
            raise ValueError("give source (or a provider table with its type and model)")
        return self

    def resolved_source(self) -> str:
        """``source``, or ``TYPE:MODEL`` of the provider table."""
        if self.source is not None:
            return self.source
        assert self.provider is not None
        kind = self.provider.get("type")
        if not isinstance(kind, str) or kind not in PROVIDER_TYPES:
            shown = f" {str(kind)[:40]!r}" if kind is not None else ""
            raise InvalidRequest(f"unknown provider type{shown}; known: {', '.join(PROVIDER_TYPES)}",
                                 param="provider.type", code="unknown_provider_type")  # fmt: skip
        target = "runtime" if kind == "local" else "model"
        model = self.provider.get(target)
        if not isinstance(model, str) or not model.strip():
            raise InvalidRequest(f"provider.{target} is required without a source", param=f"provider.{target}",
                                 code="missing_field")  # fmt: skip
        return f"{kind}:{model.strip()}"


class ModelUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: Description | None = None
    tags: list[Tag] | None = Field(default=None, max_length=registry.MAX_TAGS, description="replaces the tags")

    @model_validator(mode="after")
    def _something(self) -> "ModelUpdate":
        if self.description is None and self.tags is None:
            raise ValueError("nothing to change: give description or tags")
        return self


_HIDDEN = "(encrypted)"


class ModelPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    source: str
    kind: Literal["local", "builtin", "provider"]
    path: str | None = Field(description="the model directory (local and built-in models)")
    provider: dict[str, Any] | None = Field(description="the provider table; an encrypted key is not shown")
    architecture: dict[str, Any] | None = Field(
        description="what the optimizer simulates: tune's Architecture fields plus dtype, parameters, "
        "active_parameters and context_length; null for a provider model the optimizer's catalog lacks"
    )
    description: str
    tags: list[str]
    created_by: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, model: RegisteredModel) -> "ModelPublic":
        public = cls.model_validate(model)
        if public.provider and public.provider.get("api_key_encrypted"):
            public.provider = {**public.provider, "api_key_encrypted": _HIDDEN}
        return public


class ModelPage(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelPublic]


Ref = Annotated[str, Path(min_length=1, max_length=registry.MAX_NAME, description="the model's id or name")]
_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Invalid request; `param` names the field"},
    401: {"model": ErrorResponse, "description": "Missing, unknown, revoked or expired key or token"},
    403: {"model": ErrorResponse, "description": "The caller's role does not allow this"},
    404: {"model": ErrorResponse, "description": "No model with this id or name"},
    503: {"model": ErrorResponse, "description": "Database unavailable"},
}
_CONFLICT = {409: {"model": ErrorResponse, "description": "The name is taken, or a live deployment uses the model"}}


def router(Session: Any, audit_for: Callable[[Access], Audit]) -> APIRouter:
    """The ``/models`` routes over the app's session dependency and audit (``control.app``)."""
    api = APIRouter(prefix="/models", tags=["models"], responses=_RESPONSES)

    @api.post("", response_model=ModelPublic, status_code=201, responses=_CONFLICT)
    async def add_model(
        body: ModelCreate, session: Session, access: Annotated[Access, authorize("model:manage")]
    ) -> ModelPublic:
        """Register a model and read its architecture from its config.json (a provider's model:
        from the optimizer's catalog). A directory lacking config.json, a tokenizer or weights is
        a 400 naming them; a name already registered, a 409."""
        model = await registry.add_model(
            session, source=body.resolved_source(), name=body.name, description=body.description, tags=body.tags,
            provider=body.provider, created_by=access.caller.actor, audit=audit_for(access), exist_ok=False,
        )  # fmt: skip
        return ModelPublic.of(model)

    @api.get("", response_model=ModelPage)
    async def list_models(
        session: Session,
        access: Annotated[Access, authorize("model:view")],
        tag: Annotated[str | None, Query(min_length=1, max_length=registry.MAX_TAG, description="only this tag")] = None,
    ) -> ModelPage:
        """Every registered model, by name."""
        return ModelPage(data=[ModelPublic.of(m) for m in await registry.list_models(session, tag=tag)])

    @api.get("/{ref:path}", response_model=ModelPublic)
    async def get_model(ref: Ref, session: Session, access: Annotated[Access, authorize("model:view")]) -> ModelPublic:
        return ModelPublic.of(await registry.get_model(session, ref))

    @api.patch("/{ref:path}", response_model=ModelPublic)
    async def update_model(
        ref: Ref, body: ModelUpdate, session: Session, access: Annotated[Access, authorize("model:manage")]
    ) -> ModelPublic:
        """Change the description or the tags (the list given replaces them)."""
        model = await registry.update_model(session, ref, description=body.description, tags=body.tags,
                                            audit=audit_for(access))  # fmt: skip
        return ModelPublic.of(model)

    @api.delete("/{ref:path}", response_model=ModelPublic, responses=_CONFLICT)
    async def delete_model(
        ref: Ref, session: Session, access: Annotated[Access, authorize("model:manage")]
    ) -> ModelPublic:
        """Remove a model from the registry; a 409 while a live deployment uses it."""
        return ModelPublic.of(await registry.delete_model(session, ref, audit=audit_for(access)))

    return api
