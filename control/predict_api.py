"""Predictions of the optimizer over the control API, with the predictor version that is active.

    POST /api/predict   {"rows": [{"model_path": "Qwen/Qwen3-32B", "system": "h100_sxm",
                          "isl": 1024, "osl": 256, "batch_size": 8, "tp_size": 2}], "risk": 0.1}
    -> {"object": "list", "version": "v0003",
        "data": [{...the row..., "pred_ttft_ms": 131.2, "pred_tpot_ms": 19.8, "pred_e2e_ms": ...,
                  "pred_output_tps_per_gpu": ..., "pred_ttft_ms_p90": ..., "pred_tpot_ms_p90": ...,
                  "pred_case": "seen", "row": 0}],
        "invalid": [{"row": 3, "message": "unknown GPU system 'x'; known: ..."}]}
    GET /api/predict/status -> the active version, its training data and its recorded CV

Rows use the measured-data columns (``foundry predict``'s CSV), typed in :class:`PredictRow` and in
the published schema: a row missing a required column, or with an unknown one, is a 400 naming
it; a row the catalog cannot resolve is listed in ``invalid`` with its position and skipped, as
``foundry predict`` does. The predictor is the active version under ``$FOUNDRY_HOME/tune``
(``foundry tune train`` / ``activate``), else the shipped one; it is reloaded when the active
version changes. Predicting runs in a thread.
The app includes :data:`router` behind its authentication (see :func:`control.app.create_app`).
"""

from __future__ import annotations

import asyncio
import math
import threading
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from control.errors import ControlError, InvalidRequest
from control.schemas import ErrorResponse

MAX_ROWS = 10_000


class PredictorUnavailable(ControlError):
    status = 503
    type = "server_error"
    code = "predictor_unavailable"


_TEXT = r"^[^\x00-\x1f\x7f]*$"  # no control characters
Text = Annotated[str, StringConstraints(max_length=200, pattern=_TEXT)]


def _not_a_bool(value: Any) -> Any:
    """JSON ``true`` is not the integer 1 (JSON Schema's "integer"; 8.0 is one)."""
    if isinstance(value, bool):
        raise ValueError("expected an integer, not a boolean")
    return value


_NOT_A_BOOL = BeforeValidator(_not_a_bool)
Integer = Annotated[int, _NOT_A_BOOL]
Size = Annotated[int, Field(gt=0, le=2**31 - 1), _NOT_A_BOOL]
Parallelism = Annotated[int, Field(ge=0, le=1_000_000, description="0: not used"), _NOT_A_BOOL]
Millis = Annotated[float, Field(strict=True, ge=0, le=1e9)]  # strict: not a boolean either


class PredictRow(BaseModel):
    """One serving configuration, in the measured-data columns (``foundry predict``'s CSV, see
    :mod:`tune.predict.schema`). Columns other than these are refused (a typo is not ignored); a
    row the catalog cannot resolve (an unknown model or GPU) is listed in ``invalid``."""

    model_config = ConfigDict(extra="forbid")

    model_path: Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=_TEXT)] = Field(
        description="a catalog id such as Qwen/Qwen3-32B", examples=["Qwen/Qwen3-32B"]
    )
    system: Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=_TEXT)] = Field(
        description="the GPU system, e.g. h100_sxm", examples=["h100_sxm"]
    )
    isl: Size = Field(description="input sequence length (tokens)")
    osl: Size = Field(description="output sequence length (tokens)")
    batch_size: Size
    tp_size: Size
    pp_size: Size | None = None
    attention_dp_size: Parallelism | None = None
    moe_tp_size: Parallelism | None = None
    moe_ep_size: Parallelism | None = None
    backend: Text | None = None
    backend_version: Text | None = None
    precision: Text | None = None
    gemm_quant_mode: Text | None = None
    moe_quant_mode: Text | None = None
    kv_cache_dtype: Text | None = None
    id: Text | Integer | None = Field(
        default=None, description="echoed back with the row's predictions"
    )
    silicon_ttft_ms: Millis | None = Field(default=None, description="measured; ignored")
    silicon_tpot_ms: Millis | None = Field(default=None, description="measured; ignored")


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rows: Annotated[list[PredictRow], Field(min_length=1, max_length=MAX_ROWS)]
    risk: float = Field(default=0.1, gt=0, lt=1, description="accepted chance of missing an SLO")


class _Cache:
    """The loaded predictor of the active version (loading takes ~100 ms: once per version)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: str | None = None
        self._predictor: Any = None

    def get(self) -> Any:
        from tune.errors import TuneError
        from tune.predict.predictor import ArtifactStore, Predictor

        key = str(ArtifactStore.default().active_path() or "shipped")
        with self._lock:
            if self._key != key:
                try:
                    self._predictor = Predictor.load()
                except TuneError as exc:
                    raise PredictorUnavailable(str(exc)) from None
                self._key = key
            return self._predictor


def _cache(request: Request) -> _Cache:
    """The app's predictor cache (made on first use, one per app)."""
    cache = getattr(request.app.state, "predictor_cache", None)
    if cache is None:
        cache = request.app.state.predictor_cache = _Cache()
    return cache

router = APIRouter(
    tags=["predict"],
    responses={
        400: {"model": ErrorResponse, "description": "Invalid request; `param` names the field"},
        503: {"model": ErrorResponse, "description": "No usable predictor artifacts"},
    },
)


def _clean(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _predict(cache: _Cache, body: PredictRequest) -> dict[str, Any]:
    import pandas as pd

    from tune.errors import TuneError

    predictor = cache.get()
    frame = pd.DataFrame([row.model_dump(exclude_none=True) for row in body.rows])
    try:
        result, invalid = predictor.predict_valid(frame, risk=body.risk)
    except TuneError as exc:  # a missing column: no row can be read
        raise InvalidRequest(str(exc), param="rows") from None
    positions = sorted(set(range(len(frame))) - set(invalid))
    data = [
        {key: _clean(value) for key, value in row.items()} | {"row": position}
        for position, row in zip(positions, result.to_dict(orient="records"), strict=True)
    ]
    return {
        "object": "list",
        "version": predictor.metadata.get("version", "shipped"),
        "data": data,
        "invalid": [{"row": p, "message": invalid[p]} for p in sorted(invalid)],
    }


@router.post("/predict")
async def predict(request: Request, body: PredictRequest) -> dict[str, Any]:
    """TTFT, TPOT (point and p90), E2E and throughput per GPU for each row."""
    return await asyncio.to_thread(_predict, _cache(request), body)


@router.get("/predict/status")
async def predict_status(request: Request) -> dict[str, Any]:
    """Which predictor version predicts, on what data, with which recorded accuracy."""
    predictor = await asyncio.to_thread(_cache(request).get)
    meta = predictor.metadata
    cv = meta.get("cross_validation") or {}
    return {
        "version": meta.get("version", "shipped"),
        "created_utc": meta.get("created_utc"),
        "training_rows": meta.get("training_rows"),
        "training_sources": meta.get("training_sources"),
        "systems": meta.get("systems"),
        "architectures": meta.get("architectures"),
        "cross_validation": cv.get("results"),
        "picking": cv.get("picking"),
    }
