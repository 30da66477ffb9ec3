"""Roofline physics of LLM serving: lower bounds on TTFT and TPOT, and the memory fit.

Every function works on numpy arrays (one element per deployment) so that thousands of
candidates are priced in one call; :func:`estimate` is the scalar front door.

The model, per GPU of a replica with ``tp * pp * attention_dp`` GPUs:

* **Decode** (one token for each of ``B`` running sequences) is memory-bound at small batch:
  it reads the weights of one tensor-parallel shard (for MoE, only the experts the batch's
  tokens are routed to: ``E * (1 - (1 - k/E)^T)`` of them) plus every sequence's KV cache, which
  grows with context (``isl + osl/2`` on average) and with ``B``. It turns compute-bound when
  ``2 * params * B`` FLOPs outweigh those bytes. Each layer then all-reduces its activations
  over the tensor-parallel group (two collectives per layer, ``alpha`` latency plus a ring
  transfer at half the bidirectional link bandwidth).
* **Prefill** is compute-bound: ``2 * params * isl`` plus the causal attention FLOPs
  (``isl^2 / 2``, capped by sliding windows), and never faster than one read of the weights.
  ``ttft_ms`` is one request alone (a lower bound); ``ttft_queued_ms`` prefills all ``B``
  requests together, which is what a closed loop whose requests start together sees.
* **Pipeline parallelism** splits layers over ``pp`` stages; a token passes every stage, so
  latency does not shrink, but ``pp`` micro-batches are in flight.
* **Mixed steps**: in steady state every decode step also carries ``B * isl / osl`` prefill
  tokens of the requests that replace finished ones (chunked prefill); ``tpot_mixed_ms``
  includes them.
* **Memory fit**: weights per GPU, KV cache per sequence per GPU (``isl + osl`` tokens; MLA's
  latent cache and GQA caches with fewer KV heads than ``tp`` are replicated), an activation
  and runtime reserve, under ``gpu_memory_utilization`` of the GPU's memory; the result is the
  maximum concurrency per replica.

Example (the issue's worked example: Llama-3-8B in bf16 on one H100 at batch 1 reads ~15 GB of
weights per token from 3.35 TB/s HBM):
    >>> from tune.predict.estimate import estimate
    >>> e = estimate("meta-llama/Llama-3.1-8B-Instruct", "h100_sxm", isl=1024, osl=256)
    >>> 4.3 < e.tpot_ms < 5.0
    True
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

__all__ = [
    "ALLREDUCE_LATENCY_US",
    "DP_ATTENTION_ABOVE_TP",
    "GPU_MEMORY_UTILIZATION",
    "PREFILL_CHUNK_TOKENS",
    "RUNTIME_RESERVE_GB",
    "SCALEOUT_GBS",
    "Physics",
    "Roofline",
    "memory_fit",
    "roofline",
]

ALLREDUCE_LATENCY_US = 8.0  # one small NVLink collective (launch + sync), microseconds
SCALEOUT_GBS = 50.0  # a 400 Gb/s NIC per GPU, once a group spans more than one NVLink domain
DP_ATTENTION_ABOVE_TP = 8  # wider tensor parallelism of a replicated KV cache implies DP attention
PREFILL_CHUNK_TOKENS = 8192  # engines' default token budget per step (chunked prefill)
GPU_MEMORY_UTILIZATION = 0.90  # vLLM's default share of GPU memory it may use
RUNTIME_RESERVE_GB = 3.0  # activations, CUDA graphs and allocator slack, per GPU
KV_STATE_BYTES = 4.0  # linear-attention recurrent state is kept in fp32


@dataclass(frozen=True)
class Physics:
    """Per-deployment physical quantities, each a float64 array of the same length.

    Built from rows by :func:`tune.predict.workload.physics_from_frame`; names carry units.
    """

    # model shape
    num_layers: np.ndarray
    full_layers: np.ndarray  # softmax-attention layers whose KV grows with context
    sliding_layers: np.ndarray
    sliding_window: np.ndarray
    hidden_size: np.ndarray
    num_heads: np.ndarray
    num_kv_heads: np.ndarray
    is_mla: np.ndarray  # 1.0 where the KV cache is an MLA latent (replicated over TP)
    kv_elements_layer_token: np.ndarray
    decode_attn_dim: np.ndarray  # q.k + value width per head, decode kernels
    prefill_attn_dim: np.ndarray
    linear_state_elements: np.ndarray
    # weights: "dense" = transformer weights but routed experts (attention, MLPs, shared
    # experts, routers); the LM head is read every step (bf16); an untied input embedding
    # is stored but only looked up
    dense_matmul_params: np.ndarray  # dense + LM head
    dense_weight_bytes: np.ndarray
    head_bytes: np.ndarray
    stored_embedding_bytes: np.ndarray
    expert_params: np.ndarray  # one routed expert
    expert_bytes: np.ndarray
    num_experts: np.ndarray
    experts_per_token: np.ndarray
    moe_layers: np.ndarray
    # GPU
    gemm_tflops: np.ndarray
    moe_tflops: np.ndarray
    attn_tflops: np.ndarray
    hbm_gbs: np.ndarray
    memory_gb: np.ndarray
    link_gbs: np.ndarray
    nvlink_domain_gpus: np.ndarray
    # deployment
    isl: np.ndarray
    osl: np.ndarray
    batch_size: np.ndarray
    tp: np.ndarray
    pp: np.ndarray
    attention_dp: np.ndarray
    moe_tp: np.ndarray
    moe_ep: np.ndarray
    kv_bytes: np.ndarray  # bytes per KV element

    def __len__(self) -> int:
        return len(self.isl)

    def take(self, index: np.ndarray) -> Physics:
        """The rows at ``index`` (a numpy index array)."""
        return Physics(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


@dataclass(frozen=True)
class Roofline:
    """Roofline times in milliseconds and memory in GB (per GPU), arrays like the inputs."""

    gpus: np.ndarray
    weights_per_gpu_gb: np.ndarray
    kv_per_sequence_per_gpu_gb: np.ndarray
    max_concurrency: np.ndarray  # sequences per replica that fit (may be 0)
    decode_weight_ms: np.ndarray
    decode_kv_ms: np.ndarray
    decode_compute_ms: np.ndarray
    decode_comm_ms: np.ndarray
    tpot_ms: np.ndarray  # lower bound on time per output token
    tpot_mixed_ms: np.ndarray  # same, with the steady-state prefill chunks folded in
    mixed_prefill_ms: np.ndarray  # prefill compute per decode step in steady state
    prefill_compute_ms: np.ndarray
    prefill_weight_ms: np.ndarray
    prefill_comm_ms: np.ndarray
    ttft_ms: np.ndarray  # one request alone
    ttft_queued_ms: np.ndarray  # all batch_size requests prefilled together
    ttft_chunked_ms: np.ndarray  # one request in chunks, each chunk riding a decode step
    prefill_load: np.ndarray  # share of GPU time a steady closed loop spends prefilling (0..1)
    experts_touched: np.ndarray  # distinct routed experts per MoE layer in one decode step


def _ring_ms(bytes_per_gpu: np.ndarray, group: np.ndarray, link_gbs: np.ndarray,
             collectives: np.ndarray) -> np.ndarray:
    """Time of ``collectives`` all-reduces of ``bytes_per_gpu`` over ``group`` GPUs."""
    ring = np.where(group > 1, 2.0 * (group - 1) / np.maximum(group, 1), 0.0)
    one = np.where(group > 1, ALLREDUCE_LATENCY_US * 1e-3, 0.0) + (
        ring * bytes_per_gpu / (link_gbs / 2.0 * 1e9) * 1e3
    )
    return collectives * one


def memory_fit(p: Physics) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weights per GPU GB, KV per sequence per GPU GB, max concurrency per replica)."""
    expert_shards = np.maximum(p.moe_tp * p.moe_ep, p.tp * p.attention_dp)
    weights = (
        (p.dense_weight_bytes + p.head_bytes + p.stored_embedding_bytes) / p.tp
        + p.moe_layers * p.num_experts * p.expert_bytes / expert_shards
    ) / p.pp
    kv_shard = np.where(p.is_mla > 0, 1.0, np.minimum(p.tp, p.num_kv_heads))
    ctx = p.isl + p.osl
    kv_seq = (
        p.kv_elements_layer_token
        * p.kv_bytes
        * (p.full_layers * ctx + p.sliding_layers * np.minimum(ctx, p.sliding_window))
        + p.linear_state_elements * KV_STATE_BYTES
    ) / (kv_shard * p.pp)
    usable = p.memory_gb * 1e9 * GPU_MEMORY_UTILIZATION - RUNTIME_RESERVE_GB * 1e9
    per_rank = np.floor(np.maximum(usable - weights, 0.0) / np.maximum(kv_seq, 1.0))
    return weights / 1e9, kv_seq / 1e9, per_rank * p.attention_dp


def roofline(p: Physics) -> Roofline:
    """Roofline lower bounds for every deployment in ``p``."""
    tp, pp, adp = p.tp, p.pp, p.attention_dp
    gpus = tp * pp * adp
    expert_shards = np.maximum(p.moe_tp * p.moe_ep, tp * adp)
    # a group spanning NVLink domains all-reduces hierarchically: the cross-domain step
    # moves 1/domain of the data over every GPU's NIC at once
    link = np.where(
        tp * adp > p.nvlink_domain_gpus,
        np.minimum(p.link_gbs, SCALEOUT_GBS * p.nvlink_domain_gpus),
        p.link_gbs,
    ) * 1.0
    stage_layers = p.num_layers / pp
    weights_gb, kv_seq_gb, max_conc = memory_fit(p)

    # ---- decode: a micro-batch of B/pp sequences through one stage, pp times per token
    b = p.batch_size / pp
    tokens_per_rank = b / adp
    routed = b * p.experts_per_token
    touched = np.where(
        p.num_experts > 0,
        p.num_experts * (1.0 - np.power(1.0 - p.experts_per_token / np.maximum(p.num_experts, 1),
                                        np.maximum(b, 1.0))),
        0.0,
    )
    weight_bytes = (
        (p.dense_weight_bytes + p.head_bytes) / tp
        + p.moe_layers * touched * p.expert_bytes / expert_shards
    ) / pp
    ctx = p.isl + p.osl / 2.0
    # A replicated cache (MLA latent, or fewer KV heads than tp) over more than one HGX
    # board's worth of ranks, or one that cannot hold the batch, means the engine runs
    # attention data-parallel over the tp ranks (as wide-EP DeepSeek deployments do): each
    # rank then holds only its share of the sequences.
    kv_shard = np.where(p.is_mla > 0, 1.0, np.minimum(tp, p.num_kv_heads))
    replicated_fits = p.batch_size / adp * kv_seq_gb <= np.maximum(
        p.memory_gb * GPU_MEMORY_UTILIZATION - RUNTIME_RESERVE_GB - weights_gb, 0.0
    )
    kv_shard = np.where(replicated_fits & (tp <= DP_ATTENTION_ABOVE_TP), kv_shard, tp)
    kv_tokens = p.full_layers * ctx + p.sliding_layers * np.minimum(ctx, p.sliding_window)
    kv_bytes = (
        tokens_per_rank
        * (p.kv_elements_layer_token * p.kv_bytes * kv_tokens
           + 2.0 * p.linear_state_elements * KV_STATE_BYTES)
        / (kv_shard * pp)
    )
    bw = p.hbm_gbs * 1e9
    decode_weight_ms = weight_bytes / bw * 1e3 * pp
    decode_kv_ms = kv_bytes / bw * 1e3 * pp
    attn_flops = (
        2.0 * tokens_per_rank * (p.num_heads / tp) * p.decode_attn_dim * kv_tokens / pp
    )
    dense_flops = 2.0 * tokens_per_rank * p.dense_matmul_params / (tp * pp)
    moe_flops = 2.0 * routed * p.expert_params * p.moe_layers / (expert_shards * pp)
    decode_compute_ms = pp * 1e3 * (
        dense_flops / (p.gemm_tflops * 1e12)
        + moe_flops / (p.moe_tflops * 1e12)
        + attn_flops / (p.attn_tflops * 1e12)
    )
    act_bytes = tokens_per_rank * p.hidden_size * 2.0
    group = tp * adp
    decode_comm_ms = pp * _ring_ms(act_bytes * np.where(adp > 1, adp, 1.0), group, link,
                                   2.0 * stage_layers)
    decode_memory_ms = decode_weight_ms + decode_kv_ms
    tpot = np.maximum(decode_memory_ms, decode_compute_ms) + decode_comm_ms

    # ---- prefill of one request (isl tokens) through all stages
    def prefill(tokens: np.ndarray, per_request_tokens: np.ndarray) -> tuple[np.ndarray, ...]:
        ranks = np.minimum(adp, np.maximum(tokens / np.maximum(per_request_tokens, 1.0), 1.0))
        attn_span = (
            p.full_layers * per_request_tokens / 2.0
            + p.sliding_layers * np.minimum(per_request_tokens / 2.0, p.sliding_window)
        )
        attn = 2.0 * tokens * (p.num_heads / tp) * p.prefill_attn_dim * attn_span / ranks
        dense = 2.0 * tokens * p.dense_matmul_params / (tp * ranks)
        moe = 2.0 * tokens * p.experts_per_token * p.expert_params * p.moe_layers / expert_shards
        compute_ms = 1e3 * (
            dense / (p.gemm_tflops * 1e12)
            + moe / (p.moe_tflops * 1e12)
            + attn / (p.attn_tflops * 1e12)
        )
        all_weights = (
            (p.dense_weight_bytes + p.head_bytes) / tp
            + p.moe_layers * p.num_experts * p.expert_bytes / expert_shards
        )
        weight_ms = all_weights / bw * 1e3
        comm_ms = _ring_ms(tokens / ranks * p.hidden_size * 2.0, group, link, 2.0 * p.num_layers)
        return compute_ms, weight_ms, comm_ms

    pc, pw, pcomm = prefill(p.isl * 1.0, p.isl * 1.0)
    ttft = np.maximum(pc, pw) + pcomm
    qc, qw, qcomm = prefill(p.isl * p.batch_size, p.isl * 1.0)
    ttft_queued = np.maximum(qc, qw) + qcomm
    # steady state: each decode step also prefills B*isl/osl tokens of newly admitted requests
    mixed_extra = pc * (p.batch_size * p.isl / np.maximum(p.osl, 1.0)) / np.maximum(p.isl, 1.0)
    tpot_mixed = np.maximum(decode_memory_ms, decode_compute_ms + mixed_extra / pp) + decode_comm_ms

    return Roofline(
        gpus=gpus,
        weights_per_gpu_gb=weights_gb,
        kv_per_sequence_per_gpu_gb=kv_seq_gb,
        max_concurrency=max_conc,
        decode_weight_ms=decode_weight_ms,
        decode_kv_ms=decode_kv_ms,
        decode_compute_ms=decode_compute_ms,
        decode_comm_ms=decode_comm_ms,
        tpot_ms=tpot,
        tpot_mixed_ms=tpot_mixed,
        mixed_prefill_ms=mixed_extra / pp,
        prefill_compute_ms=pc,
        prefill_weight_ms=pw,
        prefill_comm_ms=pcomm,
        ttft_ms=ttft,
        ttft_queued_ms=ttft_queued,
        ttft_chunked_ms=ttft + np.ceil(p.isl / PREFILL_CHUNK_TOKENS) * tpot,
        prefill_load=ttft_queued / (ttft_queued + np.maximum(p.osl - 1.0, 1.0) * tpot),
        experts_touched=touched,
    )
