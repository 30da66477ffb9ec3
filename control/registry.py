"""The model registry: the models a deployment can run, with the architecture the optimizer
simulates them by.

A model's ``source`` is one of:

- a local Hugging Face model directory, by absolute path: it must hold ``config.json``, a
  tokenizer and weights (a 400 names what is missing);
- ``builtin:foundry-tiny``: the built-in model, built under ``$FOUNDRY_HOME/models`` on first use;
- an outside provider's model, ``TYPE:MODEL`` with a provider type of the gateway's TOML
  (:data:`serve.config.PROVIDER_TYPES`): ``openai:gpt-4o-mini``,
  ``together:meta-llama/Llama-3.3-70B-Instruct-Turbo``, ``azure:gpt-4o``,
  ``anthropic:claude-sonnet-4-5``, ``local:RUNTIME``. ``provider`` adds the rest of the
  ``[models.X.providers.Y]`` table (``base_url``, ``api_key_env``, ...), checked by the same
  pydantic models as the TOML file.

The ``architecture`` stored with it is :class:`tune.catalog.architectures.Architecture` read
from the model's ``config.json`` (a provider's model: the optimizer's catalog entry, if its id
is there; else none), plus ``dtype``, ``parameters``, ``active_parameters`` and
``context_length``, so a model the catalog has never seen can still be simulated:
:func:`to_architecture` turns it back into an ``Architecture``.

Every function takes an open session; the ones that change data commit before they return,
with their audit record (when ``audit`` is given) in the same transaction. Adding is
idempotent: the same name and source again return the row already there (the deployment
pipeline's ``model_add`` step may run twice), unless ``exist_ok=False`` (the API: 409).

Example::

    async with sessions() as session:
        tiny = await add_model(session, source="builtin:foundry-tiny")
        llama = await add_model(session, source="/models/Llama-3.1-8B-Instruct", tags=["chat"])
        gpt = await add_model(session, source="openai:gpt-4o-mini", provider={"api_key_env": "OPENAI_KEY"})
        arch = to_architecture(llama.architecture)      # what tune simulates
        await update_model(session, "foundry-tiny", description="for smoke tests")
        await delete_model(session, gpt.id)             # 409 while a live deployment uses it
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from control.audit import Audit
from control.errors import Conflict, InvalidRequest, NotFound
from control.models import Deployment, RegisteredModel, utcnow
from serve.config import PROVIDER_TYPES, ProviderConfig
from serve.runtimes import tiny
from tune.catalog.architectures import CATALOG, Architecture, from_config
from tune.errors import TuneError

__all__ = [
    "DERIVED_KEYS",
    "add_model",
    "architecture_of",
    "delete_model",
    "get_model",
    "list_models",
    "missing_files",
    "source_error",
    "to_architecture",
    "update_model",
]

MAX_NAME = 128
MAX_SOURCE = 1024
_MODEL_ID = r"[A-Za-z0-9][A-Za-z0-9._/-]{0,%d}" % (MAX_NAME - 1)
NAME_PATTERN = rf"^{_MODEL_ID}$"
"""Up to 128 letters, digits, '.', '_', '-' and '/', starting with a letter or digit
(``meta-llama/Llama-3.1-8B``): a model name, and the model id of a provider source."""
_BUILTIN_MODELS = (tiny.TINY_NAME,)
_DIRECTORY = r"/([^\x00-\x1f\x7f]*/)?[A-Za-z0-9][^/\x00-\x1f\x7f]*/?"  # its name starts with a letter or digit
SOURCE_PATTERN = (
    rf"^({_DIRECTORY}|builtin:({'|'.join(_BUILTIN_MODELS)})|({'|'.join(PROVIDER_TYPES)}):{_MODEL_ID})$"
)
"""What ``source`` accepts: an absolute path of a directory whose name starts with a letter or
digit, a built-in model, or ``TYPE:MODEL``."""
MAX_DESCRIPTION = 2000
MAX_TAGS = 32
MAX_TAG = 64
_NAME = re.compile(_MODEL_ID)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PATH = re.compile(_DIRECTORY)
_CONTROL_BUT_TABS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # tabs and newlines are fine
_TAG = re.compile(r"^[^\x00-\x1f\x7f,]+$")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9_-]*):(.*)$", re.DOTALL)

DERIVED_KEYS = ("dtype", "parameters", "active_parameters", "context_length")
"""Keys of a stored architecture that are derived, not :class:`Architecture` fields."""

_PROVIDER = TypeAdapter(ProviderConfig)

# --- the files of a model directory -------------------------------------------------------------

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model", "tiktoken.model")
_WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin", "*.gguf", "consolidated*.pth")
_WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def missing_files(directory: Path) -> list[str]:
    """What a Hugging Face model directory lacks to be served, in words; [] when complete.

    >>> import tempfile, pathlib
    >>> missing_files(pathlib.Path(tempfile.mkdtemp()))  # doctest: +NORMALIZE_WHITESPACE
    ['config.json', 'a tokenizer (tokenizer.json, tokenizer.model, vocab.json, vocab.txt,
      spiece.model or tiktoken.model)', 'weights (*.safetensors, pytorch_model*.bin, *.gguf or
      consolidated*.pth)']
    """
    missing = []
    if not (directory / "config.json").is_file():
        missing.append("config.json")
    if not any((directory / f).is_file() for f in _TOKENIZER_FILES):
        missing.append(f"a tokenizer ({', '.join(_TOKENIZER_FILES[:-1])} or {_TOKENIZER_FILES[-1]})")
    elif (directory / "vocab.json").is_file() and not any((directory / f).is_file() for f in _TOKENIZER_FILES
                                                            if f != "vocab.json"):
        if not (directory / "merges.txt").is_file():  # a BPE vocabulary is half a tokenizer
            missing.append("merges.txt (next to vocab.json)")
    shards = _indexed_shards(directory)
    if shards is not None:
        missing.extend(f"{s} (named in the weight index)" for s in shards if not (directory / s).is_file())
    elif not any(p.is_file() for g in _WEIGHT_GLOBS for p in directory.glob(g)):
        missing.append(f"weights ({', '.join(_WEIGHT_GLOBS[:-1])} or {_WEIGHT_GLOBS[-1]})")
    return missing


def _indexed_shards(directory: Path) -> list[str] | None:
    """The shard files a weight index names, or None without an index."""
    for name in _WEIGHT_INDEXES:
        index = directory / name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text()).get("weight_map") or {}
                return sorted({str(f) for f in weight_map.values()})
            except (OSError, ValueError, AttributeError):
                return [f"a readable {name}"]
    return None


# --- architectures ---------------------------------------------------------------------------


def architecture_of(source: str | Path, *, name: str | None = None, home: Path | None = None) -> dict[str, Any]:
    """The stored architecture of a model: ``source`` is a model directory or its config.json,
    ``builtin:foundry-tiny``, or an optimizer catalog id (also as ``TYPE:ID``). Raises
    :class:`InvalidRequest` (``param="source"``) when it cannot be read. Blocking: file reads,
    and building the built-in model once.

    >>> arch = architecture_of("meta-llama/Llama-3.1-8B-Instruct")
    >>> arch["num_layers"], arch["num_kv_heads"], round(arch["parameters"] / 1e9, 2), arch["context_length"]
    (32, 8, 8.03, 131072)
    """
    text = str(source).strip()
    if text.startswith(tiny.BUILTIN_PREFIX):
        return _read_config(_builtin_dir(text, home), name or text.removeprefix(tiny.BUILTIN_PREFIX))
    path = Path(text).expanduser()
    if path.is_absolute() or path.exists():
        directory = path.parent if path.is_file() else path
        return _read_config(directory, name or directory.name, config=path if path.is_file() else None)
    scheme = _SCHEME.match(text)
    model = scheme.group(2) if scheme and scheme.group(1) in PROVIDER_TYPES else text
    arch = CATALOG.get(model.lower())
    if arch is None:
        raise InvalidRequest(f"no model directory or catalog entry named {text[:200]!r}", param="source",
                             code="unknown_model")  # fmt: skip
    return _stored(arch, dtype=None)


def to_architecture(stored: dict[str, Any]) -> Architecture:
    """The :class:`Architecture` of a stored ``architecture`` (what tune simulates)."""
    return Architecture.model_validate({k: v for k, v in stored.items() if k not in DERIVED_KEYS})


def _read_config(directory: Path, name: str, *, config: Path | None = None) -> dict[str, Any]:
    path = config or directory / "config.json"
    try:
        parsed = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"cannot read {path}: {exc.__class__.__name__}", param="source",
                             code="invalid_model_config") from None  # fmt: skip
    if not isinstance(parsed, dict):
        raise InvalidRequest(f"{path} does not hold a JSON object", param="source", code="invalid_model_config")
    try:
        arch = from_config(parsed, name=name)
    except (TuneError, TypeError, ValueError, KeyError) as exc:
        raise InvalidRequest(f"{path} is not a decoder model's config the optimizer can read: {exc}"[:1000],
                             param="source", code="invalid_model_config") from None  # fmt: skip
    inner = parsed.get("text_config") if isinstance(parsed.get("text_config"), dict) else parsed
    dtype = inner.get("torch_dtype") or inner.get("dtype") or parsed.get("torch_dtype") or parsed.get("dtype")
    return _stored(arch, dtype=dtype if isinstance(dtype, str) else None)


_PRECISION_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


def _stored(arch: Architecture, *, dtype: str | None) -> dict[str, Any]:
    return {
        **arch.model_dump(mode="json"),
        "dtype": dtype or _PRECISION_DTYPES.get(arch.native_precision, arch.native_precision),
        "parameters": arch.total_params,
        "active_parameters": arch.active_params,
        "context_length": arch.max_position_embeddings,
    }


def _builtin_dir(source: str, home: Path | None) -> Path:
    name = source.removeprefix(tiny.BUILTIN_PREFIX)
    if name not in _BUILTIN_MODELS:
        known = ", ".join(f"{tiny.BUILTIN_PREFIX}{m}" for m in _BUILTIN_MODELS)
        raise InvalidRequest(f"unknown built-in model {source[:100]!r}; known: {known}", param="source",
                             code="unknown_model")  # fmt: skip
    if home is None:
        from control.config import foundry_home

        home = foundry_home()
    return tiny.ensure_tiny_model(home)


# --- sources ---------------------------------------------------------------------------------


class _Source:
    """A parsed, checked source: what a row stores, without reading any file yet."""

    def __init__(self, source: str, kind: str, *, path: Path | None = None, provider: dict | None = None,
                 default_name: str) -> None:  # fmt: skip
        self.source, self.kind, self.path, self.provider, self.default_name = source, kind, path, provider, default_name


def source_error(source: str) -> tuple[str, str] | None:
    """Why ``source`` is not a source (message, error code), None if it is one: exactly the
    strings :data:`SOURCE_PATTERN` refuses, each with its reason.

    >>> source_error("openai:gpt-4o-mini"), source_error("/models/llama")
    (None, None)
    >>> source_error("ollama:llama3")[1], source_error("models/llama")[1]
    ('unknown_provider_type', 'invalid_value')
    """
    if not 0 < len(source) <= MAX_SOURCE:
        return f"source must be 1 to {MAX_SOURCE} characters", "invalid_value"
    if _CONTROL.search(source):
        return "source must not hold control characters", "invalid_value"
    scheme = _SCHEME.match(source)
    if source.startswith("/"):
        if _PATH.fullmatch(source):
            return None
        return f"the model directory's name must start with a letter or digit: {source[:200]!r}", "invalid_value"
    if scheme is None or source.startswith(("~", ".")):
        return f"a model directory must be an absolute path, not {source[:200]!r}", "invalid_value"
    kind, rest = scheme.group(1), scheme.group(2)
    if kind == "builtin":
        if rest in _BUILTIN_MODELS:
            return None
        known = ", ".join(f"builtin:{m}" for m in _BUILTIN_MODELS)
        return f"unknown built-in model {source[:100]!r}; known: {known}", "unknown_model"
    if kind not in PROVIDER_TYPES:
        return (f"unknown provider type {kind[:40]!r} in source; known: builtin, {', '.join(PROVIDER_TYPES)}, "
                "or an absolute path to a model directory"), "unknown_provider_type"  # fmt: skip
    if not _NAME.fullmatch(rest):
        return (f"the model id after '{kind}:' must be 1 to {MAX_NAME} letters, digits, '.', '_', '-' and '/', "
                f"starting with a letter or digit (e.g. {kind}:gpt-4o-mini), not {rest[:200]!r}"), "invalid_value"
    return None


def _parse_source(source: str, provider: dict | None) -> _Source:
    if (error := source_error(source)) is not None:
        raise InvalidRequest(error[0], param="source", code=error[1])
    if source.startswith("/"):
        if provider is not None:
            raise InvalidRequest("provider settings go with a provider model (TYPE:MODEL), not a directory",
                                 param="provider")  # fmt: skip
        path = Path(_normalized(Path(source)))
        if not path.is_dir():  # the directory the body names is not there: like any unknown reference
            raise NotFound(f"model directory {str(path)[:300]!r} does not exist (on the control API's machine)",
                           param="source", code="model_directory_not_found")  # fmt: skip
        default = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(source).name).strip("-._")[:MAX_NAME]  # as given, not resolved
        return _Source(str(path), "local", path=path, default_name=default)
    kind, _, rest = source.partition(":")
    if kind == "builtin":
        if provider is not None:
            raise InvalidRequest("provider settings go with a provider model, not a built-in one", param="provider")
        return _Source(source, "builtin", default_name=rest)
    table = _provider_table(kind, rest, provider or {})
    return _Source(source, "provider", provider=table, default_name=rest)


def _normalized(path: Path) -> str:
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):
        return str(path)


def _provider_table(kind: str, model: str, extra: dict) -> dict[str, Any]:
    """The ``[models.X.providers.Y]`` table of ``kind:model`` with ``extra`` settings, checked
    by the gateway's own provider models; stored as given, defaults left out."""
    if not isinstance(extra, dict):
        raise InvalidRequest("provider must be an object (a provider table)", param="provider")
    given = extra.get("type", kind)
    if given != kind:
        raise InvalidRequest(f"provider.type {str(given)[:40]!r} differs from the source's {kind!r}",
                             param="provider.type")  # fmt: skip
    target = "runtime" if kind == "local" else "model"
    named = extra.get(target, model)
    if named != model:
        raise InvalidRequest(f"provider.{target} {str(named)[:100]!r} differs from the source's {model[:100]!r}",
                             param=f"provider.{target}")  # fmt: skip
    # JSON numbers: 2.0 is an integer to JSON Schema (and so to the published schema), not to strict mode
    table = {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in {**extra, "type": kind, target: model}.items()}
    try:
        checked = _PROVIDER.validate_python(table, strict=True)  # JSON types, as the API documents them
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"][1:] if p != kind) or None  # loc[0] is the union tag
        raise InvalidRequest(f"provider.{where}: {error['msg']}" if where else f"provider: {error['msg']}",
                             param=f"provider.{where}" if where else "provider") from None  # fmt: skip
    return checked.model_dump(mode="json", exclude_unset=True)


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise InvalidRequest(
            f"model name {name[:200]!r} is not allowed: up to {MAX_NAME} letters, digits, '.', '_', '-' and '/', "
            "starting with a letter or digit (give another with name / --name)", param="name", code="invalid_name",
        )  # fmt: skip
    return name


def _check_description(description: str) -> str:
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION or _CONTROL_BUT_TABS.search(description):
        raise InvalidRequest(f"description: at most {MAX_DESCRIPTION} characters, no control characters",
                             param="description")  # fmt: skip
    return description


def _check_tags(tags: Sequence[str]) -> list[str]:
    if isinstance(tags, str):
        raise InvalidRequest("tags must be a list of strings", param="tags")
    unique = list(dict.fromkeys(tags))
    if len(unique) > MAX_TAGS:
        raise InvalidRequest(f"at most {MAX_TAGS} tags", param="tags")
    for tag in unique:
        if not isinstance(tag, str) or not (0 < len(tag) <= MAX_TAG) or not _TAG.fullmatch(tag):
            raise InvalidRequest(f"tag {tag[:80]!r}: 1 to {MAX_TAG} characters, no commas or control characters",
                                 param="tags")  # fmt: skip
    return unique


# --- the registry ----------------------------------------------------------------------------


async def add_model(
    session: AsyncSession,
    *,
    source: str,
    name: str | None = None,
    description: str = "",
    tags: Sequence[str] = (),
    provider: dict | None = None,
    home: Path | None = None,
    created_by: str | None = None,
    audit: Audit | None = None,
    exist_ok: bool = True,
) -> RegisteredModel:
    """Register ``source`` as ``name`` (default: the directory's name, ``foundry-tiny``, or the
    provider's model id). The same name and source again return the existing row (unless
    ``exist_ok`` is false: 409); the name with another source is a 409. Bad input is a 400
    naming the field (a directory's missing files listed)."""
    parsed = _parse_source(source, provider)
    name = _check_name(name if name is not None else parsed.default_name)
    description = _check_description(description)
    tags = _check_tags(tags)
    existing = await session.scalar(select(RegisteredModel).where(RegisteredModel.name == name))
    if existing is not None:
        return _same_or_conflict(existing, parsed, exist_ok)
    # End the read before the slow part (building the built-in model, reading weights' headers):
    # on SQLite every transaction takes the write lock, and other requests would wait it out.
    await session.rollback()
    path, architecture = await asyncio.to_thread(_inspect, parsed, name, home)
    model = RegisteredModel(
        name=name, source=parsed.source, kind=parsed.kind, path=str(path) if path else None, provider=parsed.provider,
        architecture=architecture, description=description, tags=tags, created_by=created_by,
    )  # fmt: skip
    try:
        session.add(model)
        await session.flush()
        if audit is not None:
            changes = {"name": name, "source": parsed.source, "kind": parsed.kind, "tags": tags}
            await audit.append(session, "model.create", f"model:{model.id}", changes=changes)
        await session.commit()
    except IntegrityError:  # the same name, added by a concurrent request since the check above
        await session.rollback()
        existing = await session.scalar(select(RegisteredModel).where(RegisteredModel.name == name))
        if existing is None:
            raise
        return _same_or_conflict(existing, parsed, exist_ok)
    return model


def _same_or_conflict(existing: RegisteredModel, parsed: _Source, exist_ok: bool) -> RegisteredModel:
    if exist_ok and existing.source == parsed.source and (existing.provider or None) == parsed.provider:
        return existing
    other = "" if existing.source == parsed.source else f" from {existing.source[:200]!r}"
    raise Conflict(f"a model named {existing.name!r} is already registered{other} ({existing.id})",
                   param="name", code="model_exists")  # fmt: skip


def _inspect(parsed: _Source, name: str, home: Path | None) -> tuple[Path | None, dict | None]:
    """The model directory and the stored architecture (blocking: runs in a thread)."""
    if parsed.kind == "provider":
        assert parsed.provider is not None
        model = parsed.provider.get("model") or parsed.provider.get("runtime") or ""
        arch = CATALOG.get(model.lower())
        return None, _stored(arch, dtype=None) if arch is not None else None
    directory = _builtin_dir(parsed.source, home) if parsed.kind == "builtin" else parsed.path
    assert directory is not None
    if not directory.is_dir():
        raise InvalidRequest(f"model directory {str(directory)[:300]!r} does not exist", param="source",
                             code="model_directory_not_found")  # fmt: skip
    missing = missing_files(directory)
    if missing:
        raise InvalidRequest(f"model directory {str(directory)[:300]!r} lacks {_and(missing)}", param="source",
                             code="incomplete_model_directory")  # fmt: skip
    return directory, _read_config(directory, name)


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


async def list_models(session: AsyncSession, *, tag: str | None = None) -> list[RegisteredModel]:
    """Every registered model by name; with ``tag``, those carrying it."""
    rows = list(await session.scalars(select(RegisteredModel).order_by(RegisteredModel.name)))
    return [m for m in rows if tag in (m.tags or [])] if tag is not None else rows


def model_not_found(ref: str) -> NotFound:
    return NotFound(f"no model with id or name {ref[:200]!r}", param="model", code="model_not_found")


async def get_model(session: AsyncSession, ref: str) -> RegisteredModel:
    """The model with id or name ``ref`` (404 if none)."""
    model = await session.get(RegisteredModel, ref) if ref.startswith("mdl_") else None
    if model is None:
        model = await session.scalar(select(RegisteredModel).where(RegisteredModel.name == ref))
    if model is None:
        raise model_not_found(ref)
    return model


async def update_model(
    session: AsyncSession,
    ref: str,
    *,
    description: str | None = None,
    tags: Sequence[str] | None = None,
    audit: Audit | None = None,
) -> RegisteredModel:
    """Change a model's description and/or tags (``tags`` replaces the list); None keeps it."""
    model = await get_model(session, ref)
    changes: dict[str, Any] = {}
    if description is not None and description != model.description:
        model.description = changes["description"] = _check_description(description)
    if tags is not None and (checked := _check_tags(tags)) != model.tags:
        model.tags = changes["tags"] = checked
    if changes:
        model.updated_at = utcnow()
        if audit is not None:
            await audit.append(session, "model.update", f"model:{model.id}", changes=changes)
        await session.commit()
    return model


async def delete_model(session: AsyncSession, ref: str, *, audit: Audit | None = None) -> RegisteredModel:
    """Remove a model from the registry: a 409 naming the live deployments that use it. Rows of
    its deleted deployments go with it (they reference it)."""
    model = await get_model(session, ref)
    model_id, name = model.id, model.name
    live = list(await session.scalars(
        select(Deployment.name).where(Deployment.model_id == model.id, Deployment.deleted_at.is_(None))
        .order_by(Deployment.name)
    ))  # fmt: skip
    if live:
        raise _in_use(name, live)
    try:
        removed = await session.execute(delete(Deployment).where(Deployment.model_id == model.id,
                                                                  Deployment.deleted_at.is_not(None)))  # fmt: skip
        await session.delete(model)
        await session.flush()
        if audit is not None:
            changes = {"name": model.name, "source": model.source, "deleted_deployments": removed.rowcount}
            await audit.append(session, "model.delete", f"model:{model.id}", changes=changes)
        await session.commit()
    except IntegrityError:  # a deployment of it was created since the check above
        await session.rollback()
        live = list(await session.scalars(select(Deployment.name).where(Deployment.model_id == model_id)))
        raise _in_use(name, live or ["(a new one)"]) from None
    return model


def _in_use(name: str, deployments: list[str]) -> Conflict:
    shown = ", ".join(repr(n) for n in deployments[:5])
    if len(deployments) > 5:
        shown += f" and {len(deployments) - 5} more"
    return Conflict(f"model {name!r} is used by deployment(s) {shown}; delete them first",
                    param="model", code="model_in_use")  # fmt: skip
