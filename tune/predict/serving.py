"""What TTFT and TPOT mean for a deployment: end-to-end latency, throughput, SLO violation.

Written once here and used by the predictor, the search space, the candidate chooser and the
measuring evaluator, so a predicted and a measured configuration are judged the same way::

    e2e_ms              = ttft_ms + (osl - 1) * tpot_ms
    output tokens/s/GPU = batch * osl / (e2e_ms / 1000) / gpus_per_replica
    violation           = sum over SLOs of max(value / slo - 1, 0)    (0 = every SLO met)
    pick                = the highest throughput among rows with violation 0; with none, the
                          smallest violation (then the highest throughput)

Example:
    >>> from tune.predict.serving import e2e_ms, output_tps_per_gpu, slo_violation
    >>> float(e2e_ms(100.0, 10.0, 11))
    200.0
    >>> float(output_tps_per_gpu(4, 11, 200.0, 2))
    110.0
    >>> float(slo_violation(150.0, 10.0, slo_ttft_ms=100.0, slo_tpot_ms=20.0))
    0.5
"""

from __future__ import annotations

import numpy as np

__all__ = ["e2e_ms", "output_tps_per_gpu", "pick", "slo_violation"]


def e2e_ms(ttft_ms, tpot_ms, osl):  # noqa: ANN001, ANN201 (floats or numpy arrays)
    """Time from sending a request to its last token: the first token, then ``osl - 1`` more."""
    return ttft_ms + (np.asarray(osl, dtype=float) - 1.0) * tpot_ms


def output_tps_per_gpu(batch, osl, e2e, gpus):  # noqa: ANN001, ANN201
    """Output tokens/s per GPU of a replica running ``batch`` requests in a closed loop."""
    return np.asarray(batch, dtype=float) * osl / (np.asarray(e2e, dtype=float) / 1000.0) / gpus


def slo_violation(ttft_ms, tpot_ms, *, slo_ttft_ms: float, slo_tpot_ms: float,  # noqa: ANN001, ANN201
                  e2e=None, slo_e2e_ms: float | None = None):  # noqa: ANN001
    """Summed relative excess over the SLOs; 0 where every SLO is met."""
    violation = np.maximum(np.asarray(ttft_ms, dtype=float) / slo_ttft_ms - 1.0, 0.0) + np.maximum(
        np.asarray(tpot_ms, dtype=float) / slo_tpot_ms - 1.0, 0.0
    )
    if slo_e2e_ms and e2e is not None:
        violation = violation + np.maximum(np.asarray(e2e, dtype=float) / slo_e2e_ms - 1.0, 0.0)
    return violation


def pick(throughput, violation) -> tuple[int, bool]:  # noqa: ANN001 (numpy arrays)
    """(position of the chosen row, whether it meets the SLOs): see the module docstring."""
    throughput = np.asarray(throughput, dtype=float)
    violation = np.asarray(violation, dtype=float)
    meets = violation <= 0
    if meets.any():
        return int(np.flatnonzero(meets)[np.argmax(throughput[meets])]), True
    return int(np.lexsort((-throughput, violation))[0]), False
