"""The deployment search space, its constraints and the vectorised evaluation of candidates.

A :class:`Candidate` is one deployment of one model: GPU type, tensor and pipeline parallelism,
replica count, ``max_num_seqs`` (the running-batch cap per replica), weight precision and the
prefill token budget per engine step (``max_num_batched_tokens``). It is encoded as a vector of
integer genes, each an index into a choice list of the :class:`SearchSpace`, so search
algorithms see a plain bounded integer box.

Evaluation (:class:`Evaluator`) prices a batch of candidates with the predictor in one call:

* the target concurrency ``C`` is spread over the replicas; a replica runs
  ``b = min(max_num_seqs, ceil(C / replicas))`` sequences, and when ``max_num_seqs`` caps it the
  excess requests wait in a queue: closed-loop waiting adds ``e2e * (load / b - 1)`` to TTFT;
* a prefill budget below the prompt length splits a prefill over ``ceil(isl / budget)`` steps,
  each costing about a decode step; a larger budget reserves more activation memory;
* constraints: attention heads (and KV heads) divisible by ``tp``, ``tp`` within one NVLink
  domain, ``replicas * tp * pp`` within the GPU budget, weights plus the KV cache of ``b``
  sequences of ``isl + osl`` tokens within memory (:func:`tune.predict.roofline.memory_fit`);
* SLOs (TTFT, TPOT, optional E2E) are soft constraints judged on the ``1 - risk`` quantile of
  the predictions (the 90th percentile by default; see :mod:`tune.predict.predictor`):
  ``violation`` is the summed relative excess, 0 when every SLO is met.

Objectives: output tokens/s per GPU (maximise) or cost per million output tokens (minimise);
the per-request TPOT is the second objective of the Pareto front.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tune.catalog.architectures import Architecture, resolve_model
from tune.errors import InvalidInput
from tune.catalog.hardware import GPU, get_gpu
from tune.predict.roofline import PREFILL_CHUNK_TOKENS
from tune.predict.serving import e2e_ms, output_tps_per_gpu, slo_violation

if TYPE_CHECKING:
    from tune.predict.predictor import Predictor

__all__ = [
    "GENE_NAMES",
    "Candidate",
    "Evaluation",
    "Evaluator",
    "Objective",
    "SearchSpace",
]

Objective = Literal["throughput_per_gpu", "cost"]
GENE_NAMES = ("gpu", "tp", "pp", "replicas", "max_num_seqs", "precision", "max_num_batched_tokens")
NATIVE = "native"


class SearchSpace(BaseModel):
    """What to deploy, on what, under which load and SLOs, and the choices to search over."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    gpus: tuple[str, ...] = Field(min_length=1)
    num_gpus: int = Field(ge=1, description="GPUs available of the chosen type")
    isl: int = Field(ge=1)
    osl: int = Field(ge=1)
    concurrency: int = Field(ge=1, description="target concurrent requests, all replicas")
    slo_ttft_ms: float = Field(gt=0)
    slo_tpot_ms: float = Field(gt=0)
    slo_e2e_ms: float | None = Field(default=None, gt=0)
    objective: Objective = "throughput_per_gpu"
    tp: tuple[int, ...] = (1, 2, 4, 8)
    pp: tuple[int, ...] = (1, 2)
    max_num_seqs: tuple[int, ...] = (
        1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512,
    )
    precisions: tuple[str, ...] = (NATIVE, "fp8")
    max_num_batched_tokens: tuple[int, ...] = (2048, 4096, 8192, 16384)
    max_replicas: int | None = Field(default=None, ge=1)
    price_per_hour_usd: dict[str, float] = Field(default_factory=dict)
    risk: float = Field(default=0.1, gt=0, lt=1, description=(
        "accepted chance of missing an SLO: SLOs are judged on the (1 - risk) quantile of the "
        "predictions (0.1: the 90th percentile; 0.5: the point prediction)"))

    @model_validator(mode="after")
    def _check(self) -> SearchSpace:
        for name in self.gpus:
            get_gpu(name)
        resolve_model(self.model)
        for field in ("tp", "pp", "max_num_seqs", "precisions", "max_num_batched_tokens"):
            if not getattr(self, field):
                raise ValueError(f"{field} needs at least one choice")
        return self

    # ----- genes ---------------------------------------------------------------------------
    @property
    def replica_choices(self) -> int:
        return self.max_replicas or self.num_gpus

    @property
    def upper_bounds(self) -> tuple[int, ...]:
        """Inclusive upper bound of each gene (lower bounds are 0)."""
        return (
            len(self.gpus) - 1, len(self.tp) - 1, len(self.pp) - 1, self.replica_choices - 1,
            len(self.max_num_seqs) - 1, len(self.precisions) - 1,
            len(self.max_num_batched_tokens) - 1,
        )

    @property
    def size(self) -> int:
        """Number of distinct gene vectors (the grid)."""
        return math.prod(u + 1 for u in self.upper_bounds)

    def decode(self, genes: tuple[int, ...] | list[int]) -> Candidate:
        g = [int(x) for x in genes]
        if len(g) != len(GENE_NAMES) or any(
            not 0 <= x <= u for x, u in zip(g, self.upper_bounds, strict=True)
        ):
            raise InvalidInput(f"genes {g} outside the space's bounds {self.upper_bounds}")
        return Candidate(
            gpu=self.gpus[g[0]], tp=self.tp[g[1]], pp=self.pp[g[2]], replicas=g[3] + 1,
            max_num_seqs=self.max_num_seqs[g[4]], precision=self.precisions[g[5]],
            max_num_batched_tokens=self.max_num_batched_tokens[g[6]], genes=tuple(g),
        )

    def grid(self) -> list[tuple[int, ...]]:
        """Every gene vector, in lexicographic order."""
        ranges = [range(u + 1) for u in self.upper_bounds]
        out: list[tuple[int, ...]] = [()]
        for r in ranges:
            out = [prefix + (i,) for prefix in out for i in r]
        return out

    def gpu(self, name: str) -> GPU:
        gpu = get_gpu(name)
        price = self.price_per_hour_usd.get(name)
        return gpu.with_price(price) if price is not None else gpu


@dataclass(frozen=True)
class Candidate:
    """One deployment; ``genes`` locate it in its space."""

    gpu: str
    tp: int
    pp: int
    replicas: int
    max_num_seqs: int
    precision: str
    max_num_batched_tokens: int
    genes: tuple[int, ...]

    @property
    def gpus_per_replica(self) -> int:
        return self.tp * self.pp

    def as_config(self) -> dict[str, object]:
        """A JSON-friendly dict (what Ray Tune trials receive)."""
        return asdict(self) | {"genes": list(self.genes)}


@dataclass(frozen=True)
class Evaluation:
    """Predicted figures of one candidate under the space's load and SLOs."""

    candidate: Candidate
    feasible: bool
    reason: str  # why infeasible; "" when feasible
    batch_per_replica: int
    ttft_ms: float
    tpot_ms: float
    e2e_ms: float
    output_tps_per_gpu: float
    output_tps_total: float
    cost_per_million_tokens_usd: float
    gpus_used: int
    violation: float  # summed relative SLO excess of the bounds; 0 = meets every SLO
    max_concurrency_per_replica: int
    ttft_bound_ms: float = float("nan")  # the (1 - risk) quantile the SLOs are judged on
    tpot_bound_ms: float = float("nan")
    case: str = ""  # seen, unseen_model, unseen_gpu, unseen_model_gpu (tune.predict.predictor)

    @property
    def meets_slo(self) -> bool:
        return self.feasible and self.violation <= 0.0

    def objective_value(self, objective: Objective) -> float:
        return self.output_tps_per_gpu if objective == "throughput_per_gpu" else (
            self.cost_per_million_tokens_usd
        )

    _METRICS = (
        "feasible", "reason", "batch_per_replica", "ttft_ms", "tpot_ms", "e2e_ms",
        "output_tps_per_gpu", "output_tps_total", "cost_per_million_tokens_usd", "gpus_used",
        "violation", "max_concurrency_per_replica", "ttft_bound_ms", "tpot_bound_ms",
        "case",
    )

    def to_metrics(self) -> dict[str, object]:
        """Flat, JSON-friendly fields (what a Ray Tune trial reports)."""
        return {name: getattr(self, name) for name in self._METRICS}

    @classmethod
    def from_metrics(cls, candidate: Candidate, metrics: dict[str, object]) -> Evaluation:
        """Rebuild an evaluation from :meth:`to_metrics` output."""
        return cls(candidate=candidate, **{name: metrics[name] for name in cls._METRICS})

    @classmethod
    def failed(cls, candidate: Candidate, reason: str) -> Evaluation:
        """An evaluation for a candidate whose trial could not produce figures."""
        inf = float("inf")
        return cls(candidate=candidate, feasible=False, reason=reason, batch_per_replica=0,
                   ttft_ms=inf, tpot_ms=inf, e2e_ms=inf, output_tps_per_gpu=0.0,
                   output_tps_total=0.0, cost_per_million_tokens_usd=inf, gpus_used=0,
                   violation=inf, max_concurrency_per_replica=0)

    def as_dict(self) -> dict[str, object]:
        c = self.candidate
        return {
            "gpu": c.gpu, "tp": c.tp, "pp": c.pp, "replicas": c.replicas,
            "max_num_seqs": c.max_num_seqs, "precision": c.precision,
            "max_num_batched_tokens": c.max_num_batched_tokens,
            "gpus_used": self.gpus_used, "batch_per_replica": self.batch_per_replica,
            "pred_ttft_ms": round(self.ttft_ms, 3), "pred_tpot_ms": round(self.tpot_ms, 3),
            "pred_e2e_ms": round(self.e2e_ms, 3),
            "pred_ttft_ms_bound": round(self.ttft_bound_ms, 3),
            "pred_tpot_ms_bound": round(self.tpot_bound_ms, 3),
            "pred_case": self.case,
            "pred_output_tps_per_gpu": round(self.output_tps_per_gpu, 3),
            "pred_output_tps_total": round(self.output_tps_total, 3),
            "cost_per_million_tokens_usd": round(self.cost_per_million_tokens_usd, 4),
            "meets_slo": self.meets_slo, "feasible": self.feasible, "reason": self.reason,
            "slo_violation": round(self.violation, 4),
            "max_concurrency_per_replica": self.max_concurrency_per_replica,
        }


def _activation_gb(arch: Architecture, tokens: np.ndarray, tp: np.ndarray) -> np.ndarray:
    """Activation memory one engine step of ``tokens`` tokens reserves per GPU (bf16)."""
    mlp = max(arch.intermediate_size, arch.moe_intermediate_size * max(arch.num_experts_per_token, 1))
    per_token = 2.0 * (4 * arch.hidden_size + 2 * mlp / tp)
    return tokens * per_token / 1e9


class Evaluator:
    """Prices candidates of one space with a predictor, caching by genes."""

    def __init__(self, space: SearchSpace, predictor: Predictor) -> None:
        self.space = space
        self.predictor = predictor
        self.arch = resolve_model(space.model)
        self._cache: dict[tuple[int, ...], Evaluation] = {}
        self.calls = 0

    def __call__(self, candidates: list[Candidate]) -> list[Evaluation]:
        todo = [c for c in dict.fromkeys(candidates) if c.genes not in self._cache]
        if todo:
            for evaluation in self._evaluate(todo):
                self._cache[evaluation.candidate.genes] = evaluation
        return [self._cache[c.genes] for c in candidates]

    @property
    def evaluated(self) -> int:
        return len(self._cache)

    def _evaluate(self, cands: list[Candidate]) -> list[Evaluation]:
        import pandas as pd

        from tune.predict.features import build_features

        self.calls += 1
        s, arch = self.space, self.arch
        tp = np.array([c.tp for c in cands], dtype=float)
        pp = np.array([c.pp for c in cands], dtype=float)
        per_replica = tp * pp
        max_replicas = np.floor(s.num_gpus / per_replica)
        replicas = np.array([c.replicas for c in cands], dtype=float)
        load = np.ceil(s.concurrency / replicas)
        mns = np.array([c.max_num_seqs for c in cands], dtype=float)
        batch = np.minimum(mns, load)
        budget = np.array([c.max_num_batched_tokens for c in cands], dtype=float)
        precision = [
            "" if c.precision == NATIVE else c.precision for c in cands
        ]
        rows = pd.DataFrame({
            "backend": "vllm", "model_path": s.model, "system": [c.gpu for c in cands],
            "precision": precision, "isl": s.isl, "osl": s.osl, "batch_size": batch,
            "tp_size": tp, "pp_size": pp, "attention_dp_size": 1.0,
        })
        gpus = {name: s.gpu(name) for name in s.gpus}
        features = build_features(rows, gpus=gpus)
        pred = self.predictor.predict_features(features, risk=s.risk)
        roof = features.roofline
        # prefill budget: extra chunks each ride a decode step; default engines use 8192
        extra_chunks = np.ceil(s.isl / budget) - np.ceil(s.isl / PREFILL_CHUNK_TOKENS)
        queued = np.maximum(load / batch - 1.0, 0.0)  # closed loop: wait for a running slot

        def served(ttft: np.ndarray, tpot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            ttft = np.maximum(ttft + extra_chunks * tpot, 1e-3)
            ttft = ttft + queued * e2e_ms(ttft, tpot, s.osl)
            return ttft, e2e_ms(ttft, tpot, s.osl)

        tpot, tpot_bound = pred["tpot"], pred["tpot_bound"]
        ttft, e2e = served(pred["ttft"], tpot)
        ttft_bound, e2e_bound = served(pred["ttft_bound"], tpot_bound)
        # memory: KV capacity after the activation reserve of the chosen budget
        default_budget = np.full_like(budget, PREFILL_CHUNK_TOKENS)
        act_gb = _activation_gb(arch, budget, tp) - _activation_gb(arch, default_budget, tp)
        kv_seq = np.maximum(roof.kv_per_sequence_per_gpu_gb, 1e-12)
        capacity = np.floor(np.maximum(roof.max_concurrency - act_gb / kv_seq, 0.0))
        tps_gpu = output_tps_per_gpu(batch, s.osl, e2e, per_replica)
        tps_replica = tps_gpu * per_replica
        gpus_used = replicas * per_replica
        price = np.array([gpus[c.gpu].price_per_hour_usd for c in cands])
        total_tps = tps_replica * replicas
        cost = gpus_used * price / np.maximum(total_tps * 3600.0, 1e-9) * 1e6
        violation = slo_violation(ttft_bound, tpot_bound, slo_ttft_ms=s.slo_ttft_ms,
                                  slo_tpot_ms=s.slo_tpot_ms, e2e=e2e_bound,
                                  slo_e2e_ms=s.slo_e2e_ms)
        out = []
        for i, c in enumerate(cands):
            reason = self._infeasible(c, int(capacity[i]), int(batch[i]), max_replicas[i])
            out.append(Evaluation(
                candidate=c, feasible=not reason, reason=reason,
                batch_per_replica=int(batch[i]), ttft_ms=float(ttft[i]), tpot_ms=float(tpot[i]),
                e2e_ms=float(e2e[i]), output_tps_per_gpu=float(tps_gpu[i]),
                output_tps_total=float(total_tps[i]),
                cost_per_million_tokens_usd=float(cost[i]), gpus_used=int(gpus_used[i]),
                violation=float(violation[i]), max_concurrency_per_replica=int(capacity[i]),
                ttft_bound_ms=float(ttft_bound[i]), tpot_bound_ms=float(tpot_bound[i]),
                case=str(pred["case"][i]),
            ))
        return out

    def _infeasible(self, c: Candidate, capacity: int, batch: int, max_replicas: float) -> str:
        arch, gpu = self.arch, self.space.gpu(c.gpu)
        if arch.num_heads % c.tp:
            return f"{arch.num_heads} attention heads not divisible by tp={c.tp}"
        if not arch.uses_mla and arch.num_kv_heads % c.tp and c.tp % arch.num_kv_heads:
            return f"{arch.num_kv_heads} KV heads and tp={c.tp} do not divide each other"
        if c.tp > gpu.nvlink_domain_gpus:
            return f"tp={c.tp} exceeds the {gpu.nvlink_domain_gpus}-GPU NVLink domain"
        if max_replicas < 1:
            return f"tp*pp={c.tp * c.pp} exceeds the {self.space.num_gpus}-GPU budget"
        if c.replicas > max_replicas:
            return (f"{c.replicas} replicas of {c.tp * c.pp} GPUs exceed the "
                    f"{self.space.num_gpus}-GPU budget")
        if c.precision == "fp8" and (gpu.fp8_dense_tflops is None or _native_bytes(arch) <= 1.0):
            return "fp8 not available (GPU without fp8 or checkpoint already <= 8 bit)"
        if capacity < 1:
            return "weights do not fit in GPU memory"
        if batch > capacity or c.max_num_seqs > capacity:
            return f"KV cache holds {capacity} sequences per replica, fewer than max_num_seqs"
        return ""


def _native_bytes(arch: Architecture) -> float:
    from tune.catalog.precision import resolve_formats

    gemm, _ = resolve_formats("", "", "", native=arch.native_precision, native_moe=arch.native_moe)
    return gemm.weight_bytes
