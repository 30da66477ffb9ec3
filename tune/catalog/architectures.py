"""Model architectures: read from a Hugging Face ``config.json`` or a built-in catalog.

An :class:`Architecture` holds what the physics needs: layer count and widths, attention
geometry (GQA, MLA, sliding-window and linear-attention layers), MoE shape and the checkpoint's
native weight formats. Parameter counts and KV-cache sizes are derived from it, never typed in.

The built-in catalog is keyed by Hugging Face id (matched case-insensitively) and covers every
model in the measured data plus the popular open families: Llama 3.x, Qwen2.5, Qwen3 (dense,
MoE, Next), Qwen3.5, Mistral/Mixtral, Gemma 2/3, Phi-3/3.5/4, gpt-oss, DeepSeek-V3/R1, Kimi K2,
MiniMax-M2, GLM-4.5/5. Figures are transcribed from each model's public ``config.json``.

Example:
    >>> from tune.catalog.architectures import resolve_model
    >>> arch = resolve_model("meta-llama/Llama-3.1-8B-Instruct")
    >>> round(arch.total_params / 1e9, 2), arch.kv_elements_per_token
    (8.03, 65536)
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tune.errors import InvalidModelConfig, UnknownModel

__all__ = [
    "CATALOG",
    "Architecture",
    "catalog_ids",
    "from_config",
    "load_config_json",
    "resolve_model",
]


class Architecture(BaseModel):
    """The shape of a decoder-only transformer, as far as serving performance is concerned."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    family: str
    num_layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    num_heads: int = Field(gt=0)
    num_kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    intermediate_size: int = Field(ge=0)  # dense MLP width (also MoE models' leading dense layers)
    vocab_size: int = Field(gt=0)
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 131072
    # Mixture of experts: every layer after the first ``num_dense_layers`` is an MoE layer.
    num_experts: int = 0
    num_experts_per_token: int = 0
    num_shared_experts: int = 0
    moe_intermediate_size: int = 0
    shared_expert_intermediate_size: int = 0  # 0: same as moe_intermediate_size
    num_dense_layers: int = 0
    # Multi-head latent attention (DeepSeek-V3 style); kv_lora_rank > 0 switches it on.
    q_lora_rank: int = 0
    kv_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    attention_output_gate: bool = False  # Qwen3-Next/3.5 gated attention doubles q_proj
    # Layer kinds: the rest of the layers are full attention.
    sliding_window: int = 0
    num_sliding_layers: int = 0
    num_linear_layers: int = 0  # Gated DeltaNet (linear attention) layers
    linear_num_key_heads: int = 0
    linear_num_value_heads: int = 0
    linear_key_head_dim: int = 0
    linear_value_head_dim: int = 0
    # Checkpoint formats (see tune.catalog.precision): dense GEMMs and MoE experts.
    native_precision: str = "bf16"
    native_moe_precision: str = ""  # "": same as native_precision

    @model_validator(mode="after")
    def _check(self) -> Architecture:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                f"({self.num_kv_heads})"
            )
        if self.num_experts and not (0 < self.num_experts_per_token <= self.num_experts):
            raise ValueError("num_experts_per_token must be in 1..num_experts for an MoE model")
        if self.num_experts and not self.moe_intermediate_size:
            raise ValueError("an MoE model needs moe_intermediate_size")
        if self.num_sliding_layers + self.num_linear_layers > self.num_layers:
            raise ValueError("num_sliding_layers + num_linear_layers exceed num_layers")
        if self.num_sliding_layers and not self.sliding_window:
            raise ValueError("num_sliding_layers is set but sliding_window is 0")
        return self

    # ----- layer kinds -------------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def uses_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def num_full_layers(self) -> int:
        """Full-attention layers (neither sliding-window nor linear)."""
        return self.num_layers - self.num_sliding_layers - self.num_linear_layers

    @property
    def num_moe_layers(self) -> int:
        return self.num_layers - self.num_dense_layers if self.is_moe else 0

    # ----- parameters --------------------------------------------------------------------
    @property
    def attention_params(self) -> int:
        """Weights of one softmax-attention layer (q, k, v, o projections)."""
        h = self.hidden_size
        if self.uses_mla:
            qk = self.qk_nope_head_dim + self.qk_rope_head_dim
            if self.q_lora_rank:
                q = h * self.q_lora_rank + self.q_lora_rank * self.num_heads * qk
            else:
                q = h * self.num_heads * qk
            kv = h * (self.kv_lora_rank + self.qk_rope_head_dim) + self.kv_lora_rank * (
                self.num_heads * (self.qk_nope_head_dim + self.v_head_dim)
            )
            return q + kv + self.num_heads * self.v_head_dim * h
        q = h * self.num_heads * self.head_dim * (2 if self.attention_output_gate else 1)
        kv = 2 * h * self.num_kv_heads * self.head_dim
        return q + kv + self.num_heads * self.head_dim * h

    @property
    def linear_attention_params(self) -> int:
        """Weights of one Gated DeltaNet layer (qkvz and beta/alpha in, out projection)."""
        if not self.num_linear_layers:
            return 0
        h = self.hidden_size
        k = self.linear_num_key_heads * self.linear_key_head_dim
        v = self.linear_num_value_heads * self.linear_value_head_dim
        return h * (2 * k + 2 * v) + h * 2 * self.linear_num_value_heads + v * h

    @property
    def expert_params(self) -> int:
        """Weights of one routed expert (gated MLP: gate, up, down)."""
        return 3 * self.hidden_size * self.moe_intermediate_size

    @property
    def shared_expert_params(self) -> int:
        """Weights of all shared experts of one MoE layer."""
        width = self.shared_expert_intermediate_size or self.moe_intermediate_size
        return self.num_shared_experts * 3 * self.hidden_size * width

    @property
    def dense_mlp_params(self) -> int:
        return 3 * self.hidden_size * self.intermediate_size

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @cached_property
    def dense_params(self) -> int:
        """Non-expert transformer weights (attention, dense MLPs, shared experts, routers);
        stored in the GEMM format. Embeddings and LM head excluded."""
        attn = (
            (self.num_full_layers + self.num_sliding_layers) * self.attention_params
            + self.num_linear_layers * self.linear_attention_params
        )
        dense_layers = self.num_dense_layers if self.is_moe else self.num_layers
        mlp = dense_layers * self.dense_mlp_params
        moe_fixed = self.num_moe_layers * (
            self.shared_expert_params + self.hidden_size * self.num_experts
        )
        return attn + mlp + moe_fixed

    @property
    def routed_expert_params(self) -> int:
        """All routed experts of all layers; stored in the MoE format."""
        return self.num_moe_layers * self.num_experts * self.expert_params

    @property
    def active_routed_expert_params(self) -> int:
        return self.num_moe_layers * self.num_experts_per_token * self.expert_params

    @property
    def total_params(self) -> int:
        head = 0 if self.tie_word_embeddings else self.lm_head_params
        return self.dense_params + self.routed_expert_params + self.embedding_params + head

    @property
    def active_params(self) -> int:
        """Weights a token passes through (embedding counted once, as model cards do)."""
        head = 0 if self.tie_word_embeddings else self.lm_head_params
        return self.dense_params + self.active_routed_expert_params + self.embedding_params + head

    @property
    def matmul_params_per_token(self) -> int:
        """Weights multiplied per token: 2 FLOPs each (the embedding is a lookup)."""
        return self.dense_params + self.active_routed_expert_params + self.lm_head_params

    # ----- KV cache ----------------------------------------------------------------------
    @property
    def kv_elements_per_layer_token(self) -> int:
        """KV-cache elements one token adds to one softmax-attention layer."""
        if self.uses_mla:
            return self.kv_lora_rank + self.qk_rope_head_dim  # the compressed latent
        return 2 * self.num_kv_heads * self.head_dim

    @property
    def kv_elements_per_token(self) -> int:
        """KV-cache elements per token over the full-attention layers (grow with context)."""
        return self.num_full_layers * self.kv_elements_per_layer_token

    @property
    def sliding_kv_elements_per_token(self) -> int:
        """KV elements per token over sliding-window layers (capped at the window)."""
        return self.num_sliding_layers * self.kv_elements_per_layer_token

    @property
    def linear_state_elements(self) -> int:
        """Recurrent state of the linear-attention layers per sequence (fp32 elements)."""
        return (
            self.num_linear_layers
            * self.linear_num_value_heads
            * self.linear_key_head_dim
            * self.linear_value_head_dim
        )

    def kv_bytes_per_token(self, kv_dtype_bytes: float = 2.0) -> float:
        """KV-cache bytes a token adds (full-attention layers; per replica, unsharded)."""
        return self.kv_elements_per_token * kv_dtype_bytes

    # ----- attention FLOPs -----------------------------------------------------------------
    @property
    def attention_dims(self) -> tuple[int, int]:
        """(q.k dot-product width, value width) per head, as the decode kernels see them:
        MLA attends in the absorbed latent space (kv_lora_rank + rope, kv_lora_rank)."""
        if self.uses_mla:
            return self.kv_lora_rank + self.qk_rope_head_dim, self.kv_lora_rank
        return self.head_dim, self.head_dim

    @property
    def prefill_attention_dims(self) -> tuple[int, int]:
        """(q.k, value) widths per head in prefill (MLA decompresses to per-head K/V)."""
        if self.uses_mla:
            return self.qk_nope_head_dim + self.qk_rope_head_dim, self.v_head_dim
        return self.head_dim, self.head_dim

    @property
    def group(self) -> str:
        """Same for fine-tunes and quantised re-uploads of one architecture (a CV group)."""
        return f"{self.family}/{self.num_layers}x{self.hidden_size}/e{self.num_experts}"

    @property
    def native_moe(self) -> str:
        return self.native_moe_precision or self.native_precision


# ----------------------------------------------------------------------------------------
# config.json parsing
# ----------------------------------------------------------------------------------------


def _quant_format(quant: dict[str, Any] | None, fallback: str) -> str:
    if not quant:
        return fallback
    method = str(quant.get("quant_method", "")).lower()
    algo = str(quant.get("quant_algo", "")).lower()
    text = json.dumps(quant).lower()
    if method == "mxfp4" or "mxfp4" in algo:
        return "mxfp4"
    if "nvfp4" in algo or "nvfp4" in text or method == "fp4":
        return "nvfp4"
    if method == "fp8" or "fp8" in algo:
        return "fp8_block" if quant.get("weight_block_size") else "fp8"
    if method in ("awq", "gptq") or '"num_bits": 4' in text or "int4" in text:
        return "int4_wo"
    if '"num_bits": 8' in text or "int8" in text:
        return "int8_wo"
    if "float-quantized" in text or "fp8" in text:
        return "fp8"
    return fallback


def from_config(config: dict[str, Any], *, name: str) -> Architecture:
    """Read an :class:`Architecture` from a parsed Hugging Face ``config.json``."""
    outer = config
    if isinstance(config.get("text_config"), dict):  # multimodal wrappers (Qwen3.5, Gemma 3)
        quant = {k: v for k, v in outer.items() if k == "quantization_config"}
        config = {**config["text_config"], **quant}
    try:
        layers = int(config["num_hidden_layers"])
        hidden = int(config["hidden_size"])
        heads = int(config["num_attention_heads"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidModelConfig(
            f"{name}: config.json lacks num_hidden_layers/hidden_size/num_attention_heads"
        ) from exc
    model_type = str(config.get("model_type", outer.get("model_type", "unknown")))
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or hidden // heads)
    num_experts = int(
        config.get("n_routed_experts")
        or config.get("num_local_experts")
        or config.get("num_experts")
        or 0
    )
    moe_width = int(config.get("moe_intermediate_size") or 0)
    if num_experts and not moe_width:  # Mixtral, gpt-oss, MiniMax: experts use intermediate_size
        moe_width = int(config.get("intermediate_size") or 0)
    shared_width = int(config.get("shared_expert_intermediate_size") or 0)
    shared = int(config.get("n_shared_experts") or (1 if shared_width else 0))
    layer_types = config.get("layer_types") or []
    sliding_window = int(config.get("sliding_window") or 0)
    n_sliding = sum(1 for t in layer_types if "sliding" in str(t))
    n_linear = sum(1 for t in layer_types if "linear" in str(t))
    if not layer_types:
        interval = int(config.get("full_attention_interval") or 0)
        if interval > 1:
            n_linear = layers - layers // interval
        pattern = int(config.get("sliding_window_pattern") or 0)
        if sliding_window and pattern > 1:  # Gemma 3: every pattern-th layer is global
            n_sliding = layers - layers // pattern
        elif sliding_window and model_type.startswith("gemma2"):
            n_sliding = layers // 2
        elif sliding_window and config.get("use_sliding_window", model_type == "mistral"):
            n_sliding = layers
    if n_sliding and not sliding_window:
        sliding_window = 4096
    native = str(config.get("torch_dtype") or config.get("dtype") or "bfloat16")
    native = "fp16" if "16" in native and "b" not in native else "bf16"
    quant = config.get("quantization_config")
    gemm_format = _quant_format(quant, native)
    moe_format = gemm_format
    if quant and isinstance(quant, dict):
        skipped = json.dumps(quant.get("modules_to_not_convert") or quant.get("ignore") or [])
        if "self_attn" in skipped or "attn" in skipped:
            gemm_format = native  # gpt-oss: mxfp4 experts, bf16 attention
    try:
        return Architecture(
            name=name,
            family=model_type,
            num_layers=layers,
            hidden_size=hidden,
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            intermediate_size=int(config.get("intermediate_size") or 0),
            vocab_size=int(config.get("vocab_size") or 32000),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            max_position_embeddings=int(config.get("max_position_embeddings") or 131072),
            num_experts=num_experts,
            num_experts_per_token=int(config.get("num_experts_per_tok") or 0) if num_experts else 0,
            num_shared_experts=shared if num_experts else 0,
            moe_intermediate_size=moe_width if num_experts else 0,
            shared_expert_intermediate_size=shared_width,
            num_dense_layers=int(config.get("first_k_dense_replace") or 0) if num_experts else 0,
            q_lora_rank=int(config.get("q_lora_rank") or 0),
            kv_lora_rank=int(config.get("kv_lora_rank") or 0),
            qk_nope_head_dim=int(config.get("qk_nope_head_dim") or 0),
            qk_rope_head_dim=int(config.get("qk_rope_head_dim") or 0),
            v_head_dim=int(config.get("v_head_dim") or 0),
            attention_output_gate=bool(
                config.get("attn_output_gate", model_type.startswith(("qwen3_next", "qwen3_5")))
            ),
            sliding_window=sliding_window if n_sliding else 0,
            num_sliding_layers=n_sliding,
            num_linear_layers=n_linear,
            linear_num_key_heads=int(config.get("linear_num_key_heads") or 0),
            linear_num_value_heads=int(config.get("linear_num_value_heads") or 0),
            linear_key_head_dim=int(config.get("linear_key_head_dim") or 0),
            linear_value_head_dim=int(config.get("linear_value_head_dim") or 0),
            native_precision=gemm_format,
            native_moe_precision=moe_format if moe_format != gemm_format else "",
        )
    except ValidationError as exc:
        raise InvalidModelConfig(f"{name}: {exc.errors()[0]['msg']}") from exc


def load_config_json(path: str | Path) -> Architecture:
    """Read a ``config.json`` file, or the one in a model directory."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "config.json"
    try:
        config = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidModelConfig(f"cannot read {p}: {exc}") from exc
    if not isinstance(config, dict):
        raise InvalidModelConfig(f"{p} does not hold a JSON object")
    return from_config(config, name=str(path))


# ----------------------------------------------------------------------------------------
# built-in catalog
# ----------------------------------------------------------------------------------------


def _arch(ids: tuple[str, ...], **fields: Any) -> dict[str, Architecture]:
    arch = Architecture(name=ids[0], **fields)
    return {i.lower(): arch.model_copy(update={"name": i}) for i in ids}


def _llama(ids: tuple[str, ...], layers: int, hidden: int, heads: int, inter: int, *,
           kv: int = 8, head_dim: int = 128, vocab: int = 128256, tie: bool = False,
           family: str = "llama", native: str = "bf16", **extra: Any) -> dict[str, Architecture]:
    return _arch(ids, family=family, num_layers=layers, hidden_size=hidden, num_heads=heads,
                 num_kv_heads=kv, head_dim=head_dim, intermediate_size=inter, vocab_size=vocab,
                 tie_word_embeddings=tie, native_precision=native, **extra)


_DEEPSEEK_V3 = dict(
    family="deepseek_v3", num_layers=61, hidden_size=7168, num_heads=128, num_kv_heads=128,
    head_dim=128, intermediate_size=18432, vocab_size=129280, max_position_embeddings=163840,
    num_experts=256, num_experts_per_token=8, num_shared_experts=1, moe_intermediate_size=2048,
    num_dense_layers=3, q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128,
    qk_rope_head_dim=64, v_head_dim=128, native_precision="fp8_block",
)

CATALOG: dict[str, Architecture] = {
    # --- Llama 3.x -----------------------------------------------------------------------
    **_llama(("meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-8B",
              "meta-llama/Meta-Llama-3.1-8B-Instruct", "meta-llama/Meta-Llama-3-8B",
              "meta-llama/Meta-Llama-3-8B-Instruct"), 32, 4096, 32, 14336),
    **_llama(("nvidia/Llama-3.1-8B-Instruct-FP8",), 32, 4096, 32, 14336, native="fp8"),
    **_llama(("meta-llama/Llama-3.1-70B", "meta-llama/Llama-3.1-70B-Instruct",
              "meta-llama/Llama-3.3-70B-Instruct", "meta-llama/Meta-Llama-3-70B",
              "meta-llama/Meta-Llama-3-70B-Instruct"), 80, 8192, 64, 28672),
    **_llama(("nvidia/Llama-3.1-70B-Instruct-FP8", "nvidia/Llama-3.3-70B-Instruct-FP8"),
             80, 8192, 64, 28672, native="fp8"),
    **_llama(("meta-llama/Llama-3.1-405B", "meta-llama/Llama-3.1-405B-Instruct"),
             126, 16384, 128, 53248),
    **_llama(("meta-llama/Llama-3.1-405B-Instruct-FP8",), 126, 16384, 128, 53248, native="fp8"),
    **_llama(("meta-llama/Llama-3.2-1B", "meta-llama/Llama-3.2-1B-Instruct"),
             16, 2048, 32, 8192, head_dim=64, tie=True),
    **_llama(("meta-llama/Llama-3.2-3B", "meta-llama/Llama-3.2-3B-Instruct"),
             28, 3072, 24, 8192, tie=True),
    # --- Qwen2.5 (vocab 151936 for the tied small models, 152064 above) ------------------
    **_llama(("Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B"), 24, 896, 14, 4864, kv=2,
             head_dim=64, vocab=151936, tie=True, family="qwen2", max_position_embeddings=32768),
    **_llama(("Qwen/Qwen2.5-1.5B-Instruct", "Qwen/Qwen2.5-1.5B"), 28, 1536, 12, 8960, kv=2,
             vocab=151936, tie=True, family="qwen2", max_position_embeddings=32768),
    **_llama(("Qwen/Qwen2.5-3B-Instruct", "Qwen/Qwen2.5-3B"), 36, 2048, 16, 11008, kv=2,
             vocab=151936, tie=True, family="qwen2", max_position_embeddings=32768),
    **_llama(("Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-7B", "Qwen/Qwen2.5-Coder-7B-Instruct"),
             28, 3584, 28, 18944, kv=4, vocab=152064, family="qwen2",
             max_position_embeddings=32768),
    **_llama(("Qwen/Qwen2.5-14B-Instruct", "Qwen/Qwen2.5-14B"), 48, 5120, 40, 13824,
             vocab=152064, family="qwen2", max_position_embeddings=32768),
    **_llama(("Qwen/Qwen2.5-32B-Instruct", "Qwen/Qwen2.5-32B", "Qwen/Qwen2.5-Coder-32B-Instruct"),
             64, 5120, 40, 27648, vocab=152064, family="qwen2", max_position_embeddings=32768),
    **_llama(("Qwen/Qwen2.5-72B-Instruct", "Qwen/Qwen2.5-72B"), 80, 8192, 64, 29568,
             vocab=152064, family="qwen2", max_position_embeddings=32768),
    # --- Qwen3 dense ------------------------------------------------------------------------
    **_llama(("Qwen/Qwen3-0.6B",), 28, 1024, 16, 3072, vocab=151936, tie=True, family="qwen3",
             max_position_embeddings=40960),
    **_llama(("Qwen/Qwen3-1.7B",), 28, 2048, 16, 6144, vocab=151936, tie=True, family="qwen3",
             max_position_embeddings=40960),
    **_llama(("Qwen/Qwen3-4B", "Qwen/Qwen3-4B-Instruct-2507"), 36, 2560, 32, 9728,
             vocab=151936, tie=True, family="qwen3", max_position_embeddings=40960),
    **_llama(("Qwen/Qwen3-8B",), 36, 4096, 32, 12288, vocab=151936, family="qwen3",
             max_position_embeddings=40960),
    **_llama(("Qwen/Qwen3-14B",), 40, 5120, 40, 17408, vocab=151936, family="qwen3",
             max_position_embeddings=40960),
    **_llama(("Qwen/Qwen3-32B",), 64, 5120, 64, 25600, vocab=151936, family="qwen3",
             max_position_embeddings=40960),
    **_llama(("nvidia/Qwen3-32B-NVFP4",), 64, 5120, 64, 25600, vocab=151936, family="qwen3",
             max_position_embeddings=40960, native="nvfp4"),
    **_llama(("Qwen/Qwen3-32B-FP8",), 64, 5120, 64, 25600, vocab=151936, family="qwen3",
             max_position_embeddings=40960, native="fp8_block"),
    # --- Qwen3 MoE / Next / 3.5 ---------------------------------------------------------------
    **_llama(("Qwen/Qwen3-30B-A3B", "Qwen/Qwen3-30B-A3B-Instruct-2507"), 48, 2048, 32, 6144,
             kv=4, vocab=151936, family="qwen3_moe", max_position_embeddings=40960,
             num_experts=128, num_experts_per_token=8, moe_intermediate_size=768),
    **_llama(("Qwen/Qwen3-235B-A22B", "Qwen/Qwen3-235B-A22B-Instruct-2507"), 94, 4096, 64,
             12288, kv=4, vocab=151936, family="qwen3_moe", max_position_embeddings=40960,
             num_experts=128, num_experts_per_token=8, moe_intermediate_size=1536),
    **_llama(("Qwen/Qwen3-235B-A22B-FP8", "Qwen/Qwen3-235B-A22B-Instruct-2507-FP8"), 94, 4096,
             64, 12288, kv=4, vocab=151936, family="qwen3_moe", max_position_embeddings=40960,
             num_experts=128, num_experts_per_token=8, moe_intermediate_size=1536,
             native="fp8_block"),
    **_llama(("Qwen/Qwen3-Next-80B-A3B-Instruct", "Qwen/Qwen3-Next-80B-A3B-Thinking"), 48, 2048,
             16, 5120, kv=2, head_dim=256, vocab=151936, family="qwen3_next",
             max_position_embeddings=262144, num_experts=512, num_experts_per_token=10,
             num_shared_experts=1, moe_intermediate_size=512,
             shared_expert_intermediate_size=512, attention_output_gate=True,
             num_linear_layers=36, linear_num_key_heads=16, linear_num_value_heads=32,
             linear_key_head_dim=128, linear_value_head_dim=128),
    **_llama(("Qwen/Qwen3.5-397B-A17B",), 60, 4096, 32, 0, kv=2, head_dim=256, vocab=248320,
             family="qwen3_5_moe", max_position_embeddings=262144, num_experts=512,
             num_experts_per_token=10, num_shared_experts=1, moe_intermediate_size=1024,
             shared_expert_intermediate_size=1024, attention_output_gate=True,
             num_linear_layers=45, linear_num_key_heads=16, linear_num_value_heads=64,
             linear_key_head_dim=128, linear_value_head_dim=128),
    # --- Mistral / Mixtral ---------------------------------------------------------------------
    **_llama(("mistralai/Mistral-7B-v0.1", "mistralai/Mistral-7B-Instruct-v0.1"), 32, 4096, 32,
             14336, vocab=32000, family="mistral", max_position_embeddings=32768,
             sliding_window=4096, num_sliding_layers=32),
    **_llama(("mistralai/Mistral-7B-Instruct-v0.3", "mistralai/Mistral-7B-v0.3"), 32, 4096, 32,
             14336, vocab=32768, family="mistral", max_position_embeddings=32768),
    **_llama(("mistralai/Mistral-Nemo-Instruct-2407",), 40, 5120, 32, 14336, vocab=131072,
             family="mistral", max_position_embeddings=1024000),
    **_llama(("mistralai/Mistral-Small-24B-Instruct-2501",), 40, 5120, 32, 32768,
             vocab=131072, family="mistral", max_position_embeddings=32768),
    **_llama(("mistralai/Mistral-Large-Instruct-2407",), 88, 12288, 96, 28672, vocab=32768,
             family="mistral", max_position_embeddings=131072),
    **_llama(("mistralai/Mixtral-8x7B-v0.1", "mistralai/Mixtral-8x7B-Instruct-v0.1"), 32, 4096,
             32, 14336, vocab=32000, family="mixtral", max_position_embeddings=32768,
             num_experts=8, num_experts_per_token=2, moe_intermediate_size=14336),
    **_llama(("mistralai/Mixtral-8x22B-v0.1", "mistralai/Mixtral-8x22B-Instruct-v0.1"), 56,
             6144, 48, 16384, vocab=32768, family="mixtral", max_position_embeddings=65536,
             num_experts=8, num_experts_per_token=2, moe_intermediate_size=16384),
    # --- Gemma ---------------------------------------------------------------------------------
    **_llama(("google/gemma-2-9b", "google/gemma-2-9b-it"), 42, 3584, 16, 14336, head_dim=256,
             vocab=256000, tie=True, family="gemma2", max_position_embeddings=8192,
             sliding_window=4096, num_sliding_layers=21),
    **_llama(("google/gemma-2-27b", "google/gemma-2-27b-it"), 46, 4608, 32, 36864, kv=16,
             vocab=256000, tie=True, family="gemma2", max_position_embeddings=8192,
             sliding_window=4096, num_sliding_layers=23),
    **_llama(("google/gemma-3-1b-it",), 26, 1152, 4, 6912, kv=1, head_dim=256, vocab=262144,
             tie=True, family="gemma3_text", max_position_embeddings=32768,
             sliding_window=512, num_sliding_layers=22),
    **_llama(("google/gemma-3-4b-it",), 34, 2560, 8, 10240, kv=4, head_dim=256, vocab=262208,
             tie=True, family="gemma3", sliding_window=1024, num_sliding_layers=29),
    **_llama(("google/gemma-3-12b-it",), 48, 3840, 16, 15360, head_dim=256, vocab=262208,
             tie=True, family="gemma3", sliding_window=1024, num_sliding_layers=40),
    **_llama(("google/gemma-3-27b-it",), 62, 5376, 32, 21504, kv=16, vocab=262208, tie=True,
             family="gemma3", sliding_window=1024, num_sliding_layers=52),
    # --- Phi -----------------------------------------------------------------------------------
    **_llama(("microsoft/Phi-3-mini-4k-instruct",), 32, 3072, 32, 8192, kv=32, head_dim=96,
             vocab=32064, family="phi3", max_position_embeddings=4096),
    **_llama(("microsoft/Phi-3-medium-4k-instruct",), 40, 5120, 40, 17920, kv=10,
             vocab=32064, family="phi3", max_position_embeddings=4096),
    **_llama(("microsoft/phi-4",), 40, 5120, 40, 17920, kv=10, vocab=100352, family="phi3",
             max_position_embeddings=16384),
    **_llama(("microsoft/Phi-4-mini-instruct",), 32, 3072, 24, 8192, vocab=200064, tie=True,
             family="phi3"),
    **_llama(("microsoft/Phi-3.5-MoE-instruct",), 32, 4096, 32, 6400, vocab=32064,
             family="phimoe", num_experts=16, num_experts_per_token=2,
             moe_intermediate_size=6400),
    # --- gpt-oss (mxfp4 experts, bf16 attention; alternating 128-token sliding window) ------
    **_llama(("openai/gpt-oss-120b",), 36, 2880, 64, 2880, head_dim=64, vocab=201088,
             family="gpt_oss", num_experts=128, num_experts_per_token=4,
             moe_intermediate_size=2880, sliding_window=128, num_sliding_layers=18,
             native_moe_precision="mxfp4"),
    **_llama(("openai/gpt-oss-20b",), 24, 2880, 64, 2880, head_dim=64, vocab=201088,
             family="gpt_oss", num_experts=32, num_experts_per_token=4,
             moe_intermediate_size=2880, sliding_window=128, num_sliding_layers=12,
             native_moe_precision="mxfp4"),
    # --- MiniMax-M2 family (fp8 checkpoints) ------------------------------------------------
    **_llama(("MiniMaxAI/MiniMax-M2", "MiniMaxAI/MiniMax-M2.1", "MiniMaxAI/MiniMax-M2.5"), 62,
             3072, 48, 1536, vocab=200064, family="minimax_m2", max_position_embeddings=196608,
             num_experts=256, num_experts_per_token=8, moe_intermediate_size=1536,
             native="fp8_block"),
    # --- DeepSeek-V3 family (MLA + MoE) -------------------------------------------------------
    **_arch(("deepseek-ai/DeepSeek-V3", "deepseek-ai/DeepSeek-R1", "deepseek-ai/DeepSeek-V3-0324",
             "deepseek-ai/DeepSeek-R1-0528", "deepseek-ai/DeepSeek-V3.1"), **_DEEPSEEK_V3),
    **_arch(("nvidia/DeepSeek-R1-NVFP4", "nvidia/DeepSeek-V3.1-NVFP4", "nvidia/DeepSeek-R1-FP4",
             "nvidia/DeepSeek-R1-0528-FP4", "nvidia/DeepSeek-V3-0324-FP4"),
            **{**_DEEPSEEK_V3, "native_precision": "nvfp4"}),
    **_arch(("moonshotai/Kimi-K2-Instruct", "moonshotai/Kimi-K2-Thinking", "moonshotai/Kimi-K2.5"),
            **{**_DEEPSEEK_V3, "family": "kimi_k2", "num_heads": 64, "num_kv_heads": 64,
               "num_experts": 384, "num_dense_layers": 1, "vocab_size": 163840,
               "max_position_embeddings": 262144, "native_precision": "bf16",
               "native_moe_precision": "int4_wo"}),
    # --- GLM ---------------------------------------------------------------------------------
    **_llama(("zai-org/GLM-4.5", "zai-org/GLM-4.6"), 92, 5120, 96, 12288, vocab=151552,
             family="glm4_moe", num_experts=160, num_experts_per_token=8, num_shared_experts=1,
             moe_intermediate_size=1536, num_dense_layers=3),
    **_arch(("zai-org/GLM-5", "zhipuai/GLM-5"),
            family="glm_moe_dsa", num_layers=78, hidden_size=6144, num_heads=64,
            num_kv_heads=64, head_dim=192, intermediate_size=12288, vocab_size=154880,
            max_position_embeddings=202752, num_experts=256, num_experts_per_token=8,
            num_shared_experts=1, moe_intermediate_size=2048, num_dense_layers=3,
            q_lora_rank=2048, kv_lora_rank=512, qk_nope_head_dim=192, qk_rope_head_dim=64,
            v_head_dim=256),
}


def catalog_ids() -> list[str]:
    """Every Hugging Face id the built-in catalog knows (original spelling)."""
    return sorted(a.name for a in CATALOG.values())


def resolve_model(model: str | Path) -> Architecture:
    """The architecture of a catalog id, or of a ``config.json`` path (file or directory)."""
    text = str(model).strip()
    arch = CATALOG.get(text.lower())
    if arch is not None:
        return arch
    try:
        p = Path(text).expanduser()
        found = p.is_file() or (p.is_dir() and (p / "config.json").is_file())
    except (RuntimeError, OSError, ValueError):  # "~nobody/x", a name too long for the file system
        found = False
    if found:
        return load_config_json(p)
    raise UnknownModel(text)
