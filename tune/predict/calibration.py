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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tune.predict.roofline import Physics, Roofline

__all__ = ["TARGETS", "TERMS", "Calibration", "fit_calibration", "terms"]

TARGETS = ("ttft", "tpot")

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
    """Fitted non-negative coefficients per target, in :data:`TERMS` order."""

    coefficients: dict[str, list[float]]

    def estimate(self, target: str, p: Physics, r: Roofline) -> np.ndarray:
        """Calibrated milliseconds for every row."""
        coef = np.asarray(self.coefficients[target], dtype=float)
        return np.maximum(terms(target, p, r) @ coef, 1e-3)

    def to_json(self) -> dict[str, dict[str, float]]:
        return {t: dict(zip(TERMS[t], c, strict=True)) for t, c in self.coefficients.items()}

    @classmethod
    def from_json(cls, data: dict[str, dict[str, float]]) -> Calibration:
        return cls({t: [float(data[t][name]) for name in TERMS[t]] for t in TARGETS})


def fit_calibration(p: Physics, r: Roofline, measured: dict[str, np.ndarray]) -> Calibration:
    """Fit the coefficients of both targets by NNLS on relative error."""
    from sklearn.linear_model import LinearRegression

    coefficients = {}
    for target in TARGETS:
        y = np.asarray(measured[target], dtype=float)
        a = terms(target, p, r) / y[:, None]
        fit = LinearRegression(fit_intercept=False, positive=True).fit(a, np.ones(len(y)))
        coefficients[target] = [float(c) for c in fit.coef_]
    return Calibration(coefficients)
