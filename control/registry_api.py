"""The model registry over the control API (:mod:`control.registry` does the work).

    POST   /api/models          {"source": "/models/Llama-3.1-8B-Instruct", "name": "llama-8b", "tags": ["chat"]}
                                {"source": "builtin:foundry-tiny"}
                                {"source": "openai:gpt-4o-mini"}
                                {"provider": {"type": "openai", "model": "gpt-4o-mini", "api_key_env": "OPENAI_KEY"}}
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
from typing import Annotated, Any, Literal, get_args

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

from control import registry
from control.audit import Audit
from control.errors import InvalidRequest
from control.models import RegisteredModel
from control.permissions import Access, authorize
from control.schemas import ErrorResponse
from serve.config import PROVIDER_TYPES, ProviderConfig

__all__ = ["ModelCreate", "ModelPage", "ModelPublic", "ModelUpdate", "router"]

Tag = Annotated[str, Field(min_length=1, max_length=registry.MAX_TAG, pattern=r"^[^\x00-\x1f\x7f,]+$")]
Description = Annotated[str, Field(max_length=registry.MAX_DESCRIPTION, pattern=r"^[^\x00-\x08\x0b-\x1f\x7f]*$")]
_KEY_SOURCES = ("api_key_env", "api_key_encrypted")


def _no_default(schema: dict[str, Any]) -> None:
    """A field that may be left out but not sent as null: no ``"default": null`` in the docs."""
    schema.pop("default", None)


def _provider_schema() -> dict[str, Any]:
    """The JSON schema of a provider table in a request: the gateway's provider models, with the
    model id (``runtime`` for ``local``) required, as the registry names the model by it."""
    variants = []
    for provider in get_args(get_args(ProviderConfig)[0]):
        schema = provider.model_json_schema()
        schema.pop("title", None)
        schema.pop("description", None)
        target = "runtime" if "runtime" in schema["properties"] else "model"
        schema["properties"][target] = {"type": "string", "pattern": registry.NAME_PATTERN,
                                        "description": "the model id (the default registry name)"}  # fmt: skip
        schema["required"] = ["type", target]
        if _KEY_SOURCES[0] in schema["properties"]:
            schema["not"] = {"required": list(_KEY_SOURCES)}  # one key source at most
        variants.append(schema)
    return {"oneOf": variants, "description": "a [models.X.providers.Y] table of foundry.toml, with type and model"}


class ModelCreate(BaseModel):
    """A model to register: ``source``, or a provider table (with its ``type`` and ``model``)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"oneOf": [{"required": ["source"]}, {"required": ["provider"]}]}
    )

    source: str = Field(
        default=None, min_length=1, max_length=registry.MAX_SOURCE,
        json_schema_extra=lambda schema: schema.update(pattern=registry.SOURCE_PATTERN) or _no_default(schema),
        description="an absolute path to a model directory (on the control API's machine), builtin:foundry-tiny, "
        "or TYPE:MODEL with TYPE one of " + ", ".join(PROVIDER_TYPES),
        examples=["builtin:foundry-tiny", "/models/Llama-3.1-8B-Instruct", "openai:gpt-4o-mini"],
    )  # fmt: skip
    name: str = Field(
        default=None, min_length=1, max_length=registry.MAX_NAME, pattern=registry.NAME_PATTERN,
        description="default: the directory's name, foundry-tiny, or the provider's model id",
        json_schema_extra=_no_default,
    )  # fmt: skip
    description: Description = ""
    tags: list[Tag] = Field(default=[], max_length=registry.MAX_TAGS)
    provider: Annotated[dict[str, Any], WithJsonSchema(_provider_schema())] = Field(
        default=None, json_schema_extra=_no_default
    )

    @field_validator("source")
    @classmethod
    def _a_source(cls, source: str) -> str:
        if (error := registry.source_error(source)) is not None:
            raise ValueError(error[0])
        return source

    @model_validator(mode="after")
    def _source_or_provider(self) -> "ModelCreate":
        if (self.source is None) == (self.provider is None):
            raise ValueError("give source or a provider table (with its type and model), not both")
        return self

    def resolved(self) -> tuple[str, dict[str, Any] | None]:
        """The registry's ``source`` and ``provider`` settings: a provider table alone becomes
        ``TYPE:MODEL`` and the rest of the table."""
        if self.provider is None:
            return self.source, None
        table = dict(self.provider)
        kind = table.pop("type", None)
        if not isinstance(kind, str) or kind not in PROVIDER_TYPES:
            shown = f" {str(kind)[:40]!r}" if kind is not None else ""
            raise InvalidRequest(f"unknown provider type{shown}; known: {', '.join(PROVIDER_TYPES)}",
                                 param="provider.type", code="unknown_provider_type")  # fmt: skip
        target = "runtime" if kind == "local" else "model"
        model = table.pop(target, None)
        if not isinstance(model, str) or registry.source_error(f"{kind}:{model}") is not None:
            raise InvalidRequest(
                f"provider.{target}: the model id, 1 to {registry.MAX_NAME} letters, digits, '.', '_', '-' and '/' "
                "starting with a letter or digit", param=f"provider.{target}", code="invalid_value",
            )  # fmt: skip
        if all(k in table for k in _KEY_SOURCES):
            raise InvalidRequest("give api_key_env or api_key_encrypted, not both", param="provider.api_key_env")
        return f"{kind}:{model}", table


class ModelUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    description: Description = Field(default=None, json_schema_extra=_no_default)
    tags: list[Tag] = Field(
        default=None, max_length=registry.MAX_TAGS, description="replaces the tags", json_schema_extra=_no_default
    )

    @model_validator(mode="after")
    def _something(self) -> "ModelUpdate":
        if not self.model_fields_set:
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
        source, provider = body.resolved()
        model = await registry.add_model(
            session, source=source, name=body.name, description=body.description, tags=body.tags, provider=provider,
            created_by=access.caller.actor, audit=audit_for(access), exist_ok=False,
        )  # fmt: skip
        return ModelPublic.of(model)

    @api.get("", response_model=ModelPage)
    async def list_models(
        request: Request,
        session: Session,
        access: Annotated[Access, authorize("model:view")],
        tag: Annotated[str | None, Query(min_length=1, max_length=registry.MAX_TAG, description="only this tag")] = (
            None
        ),
    ) -> ModelPage:
        """Every registered model, by name."""
        if len(request.query_params.getlist("tag")) > 1:
            raise InvalidRequest("give tag once", param="tag")
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
