"""Calibrated roofline: the physics terms of TTFT and TPOT, weighted by measured efficiency.

A roofline is a lower bound; real engines reach a fraction of the HBM bandwidth and of the
tensor-core peak, pay a per-layer kernel cost and a fixed per-step cost, and in a closed loop
queue prefills behind each other. The calibrated estimate is a non-negative combination of
physical terms, each in milliseconds::

    TPOT ~ c0 + c1*layers + c2*moe_layers + c3*weight_read + c4*kv_read + c5*compute
           + c6*all_reduce + c7*mixed_prefill
    TTFT ~ d0 + d1*prefill_alone + d2*prefill_all_queued + d3*prefill_chunked + d4*tpot
           + d5*layers + d6*prefill_alone/(1 - prefill_load)

The coefficients are fitted by non-negative least squares on *relative* error (so each row
counts the same however slow it is) and shipped with the predictor; the learned model then
corrects the residual. Because the coefficients are efficiencies and costs rather than
per-model constants, the calibrated estimate carries over to unseen models and GPUs.

Each serving engine (``backend``: vllm, sglang, trtllm) then gets one multiplicative offset per
target, the mean log residual of its rows shrunk towards 1 (``ENGINE_SHRINK_ROWS`` pseudo-rows
at no offset): engines schedule prefills differently (SGLang's closed-loop TTFT sits ~2.4x above
vLLM's at the same physics), and that offset carries over to models and GPUs the engine was not
measured on, whereas the learned residual is damped there. An engine without rows gets none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tune.predict.roofline import Physics, Roofline

__all__ = ["ENGINE_SHRINK_ROWS", "TARGETS", "TERMS", "Calibration", "fit_calibration", "terms"]

TARGETS = ("ttft", "tpot")
# An engine's offset is its rows' summed log residual over (rows + this): a handful of rows of a
# new engine moves its offset a little, hundreds of rows set it (cross-validated; 10-50 agree).
ENGINE_SHRINK_ROWS = 50.0

TERMS: dict[str, list[str]] = {
    "tpot": [
        "step_ms", "per_layer_ms", "per_moe_layer_ms", "decode_weight_ms", "decode_kv_ms",
        "decode_compute_ms", "decode_comm_ms", "mixed_prefill_ms",
    ],
    "ttft": [
        "request_ms", "prefill_alone_ms", "prefill_queued_ms", "prefill_chunked_ms",
        "decode_step_ms", "per_layer_ms", "prefill_congested_ms",
    ],
}


def terms(target: str, p: Physics, r: Roofline) -> np.ndarray:
    """The (rows x terms) matrix of physical terms for ``target`` ("ttft" or "tpot")."""
    one = np.ones(len(p))
    if target == "tpot":
        return np.column_stack([
            one, p.num_layers * 1e-2, p.moe_layers * 1e-2, r.decode_weight_ms, r.decode_kv_ms,
            r.decode_compute_ms, r.decode_comm_ms, r.mixed_prefill_ms,
        ])
    if target == "ttft":
        return np.column_stack([
            one * 10.0, r.ttft_ms, r.ttft_queued_ms, r.ttft_chunked_ms, r.tpot_ms,
            p.num_layers * 1e-1, r.ttft_ms / np.maximum(1.0 - r.prefill_load, 0.05),
        ])
    raise ValueError(f"unknown target {target!r}")


@dataclass(frozen=True)
class Calibration:
    """Fitted non-negative coefficients per target, in :data:`TERMS` order, and each engine's
    log offset per target (``engine_offsets[target][backend]``; none for artifacts of version 2).
    """

    coefficients: dict[str, list[float]]
    engine_offsets: dict[str, dict[str, float]] = field(default_factory=dict)

    def estimate(self, target: str, p: Physics, r: Roofline,
                 engines: np.ndarray | None = None) -> np.ndarray:
        """Calibrated milliseconds for every row (``engines``: each row's backend, lower case)."""
        coef = np.asarray(self.coefficients[target], dtype=float)
        out = np.maximum(terms(target, p, r) @ coef, 1e-3)
        offsets = self.engine_offsets.get(target)
        if offsets and engines is not None:
            out = out * np.exp(_lookup(offsets, np.asarray(engines)))
        return out

    def to_json(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {
            t: dict(zip(TERMS[t], c, strict=True)) for t, c in self.coefficients.items()}
        if self.engine_offsets:
            out["engine_offsets"] = self.engine_offsets
        return out

    @classmethod
    def from_json(cls, data: dict[str, dict[str, Any]]) -> Calibration:
        offsets = {t: {str(k): float(v) for k, v in by.items()}
                   for t, by in (data.get("engine_offsets") or {}).items()}
        return cls({t: [float(data[t][name]) for name in TERMS[t]] for t in TARGETS}, offsets)


def _lookup(table: dict[str, float], keys: np.ndarray) -> np.ndarray:
    distinct, inverse = np.unique(keys.astype(str), return_inverse=True)
    return np.array([table.get(k, 0.0) for k in distinct], dtype=float)[inverse]


def fit_calibration(p: Physics, r: Roofline, measured: dict[str, np.ndarray],
                    engines: np.ndarray | None = None) -> Calibration:
    """Fit the coefficients of both targets by NNLS on relative error, then (given each row's
    engine) the engines' shrunk log offsets."""
    from sklearn.linear_model import LinearRegression

    coefficients: dict[str, list[float]] = {}
    offsets: dict[str, dict[str, float]] = {}
    for target in TARGETS:
        y = np.asarray(measured[target], dtype=float)
        a = terms(target, p, r) / y[:, None]
        fit = LinearRegression(fit_intercept=False, positive=True).fit(a, np.ones(len(y)))
        coefficients[target] = [float(c) for c in fit.coef_]
        if engines is not None:
            residual = np.log(y) - np.log(np.maximum(terms(target, p, r) @ fit.coef_, 1e-3))
            keys = np.asarray(engines).astype(str)
            offsets[target] = {
                str(k): float(residual[keys == k].sum() / ((keys == k).sum() + ENGINE_SHRINK_ROWS))
                for k in np.unique(keys)
            }
    return Calibration(coefficients, offsets)
