"""VLLMEngine: a :class:`~serve.runtimes.engine.TextEngine` over vLLM's ``AsyncLLM``.

The runtime deployment hosts it exactly as it hosts the CPU engine, so the gateway, limits,
metrics and every OpenAI feature are the same whichever engine serves a model. Per request::

    prompt text --(our tokenizer: chat template, BOS, context-length check)--> token ids
    AsyncLLM.generate(TokensPrompt, SamplingParams(output_kind=DELTA)) --> RequestOutput deltas
    --> TokenDelta(text, finish_reason, prompt_tokens, completion_tokens so far)

Closing the delta iterator early (a client that disconnects) closes vLLM's generator, which
aborts the request in the engine core and frees its KV blocks.

vLLM runs its engine core (and on CPU its worker) in processes it spawns; everything it pickles
lives in importable modules, never in ``__main__``. Errors::

    vllm.exceptions.VLLMValidationError   -> InvalidRequest (400)
    vllm.exceptions.VLLMClientError       -> InvalidRequest (400)
    EngineDeadError, EngineGenerateError  -> EngineError (500)

    >>> engine = VLLMEngine(model_dir, model_name="chat", config=config, device="cpu")  # doctest: +SKIP
    >>> async for delta in engine.generate("Hello", SamplingParams(max_tokens=8), "req-1"):  # doctest: +SKIP
    ...     print(delta.text, end="")
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

from serve.config import VLLMRuntimeConfig
from serve.runtimes._prompt import check_params, max_token_chars, render_chat, tokenize
from serve.runtimes.engine import ChatMessage, EngineError, InvalidRequest, SamplingParams, TokenDelta
from serve.runtimes.placement import Device
from serve.runtimes.vllm_metrics import VLLMMetrics

logger = logging.getLogger(__name__)

CPU_DEFAULT_KV_CACHE_GIB = 0.25
_GIB = 1 << 30


def vllm_available() -> bool:
    """Whether vLLM imports here (``make setup`` installs the CPU build on Linux x86_64)."""
    try:
        import vllm  # noqa: F401
    except Exception:  # ImportError, or a broken install (CUDA torchvision next to CPU torch)
        return False
    return True


def engine_args(config: VLLMRuntimeConfig, model_dir: Path, *, model_name: str, device: Device) -> dict[str, Any]:
    """Keyword arguments of ``vllm.AsyncEngineArgs`` for one replica.

    On CPU the KV cache gets an explicit size (vLLM refuses to guess on a shared machine) and the
    engine runs eagerly (torch.compile doubles start-up there for no gain). On GPU the ``ray``
    executor places the ``tensor_parallel_size x pipeline_parallel_size`` workers in the replica's
    placement group; on CPU the ``mp`` executor runs them as child processes of the replica.

    >>> from serve.config import VLLMRuntimeConfig
    >>> args = engine_args(VLLMRuntimeConfig(engine="vllm", model="/m"), Path("/m"), model_name="m", device="cpu")
    >>> args["kv_cache_memory_bytes"], args["enforce_eager"], args["distributed_executor_backend"]
    (268435456, True, 'mp')
    """
    kv_gib = config.kv_cache_gib
    if kv_gib is None and device == "cpu":
        kv_gib = CPU_DEFAULT_KV_CACHE_GIB
    args: dict[str, Any] = {
        "model": str(model_dir),
        "served_model_name": model_name,
        "tensor_parallel_size": config.tensor_parallel_size,
        "pipeline_parallel_size": config.pipeline_parallel_size,
        "max_num_seqs": config.max_num_seqs,
        "dtype": config.dtype,
        "enforce_eager": config.enforce_eager if config.enforce_eager is not None else device == "cpu",
        "distributed_executor_backend": "ray" if device == "gpu" else "mp",
        "disable_log_stats": False,  # the stat loggers feed VLLMMetrics
        "enable_log_requests": False,
    }
    if device == "gpu":
        args["gpu_memory_utilization"] = config.gpu_memory_utilization
    if kv_gib is not None:
        args["kv_cache_memory_bytes"] = int(kv_gib * _GIB)
    for key in ("max_model_len", "max_num_batched_tokens", "quantization"):
        if getattr(config, key) is not None:
            args[key] = getattr(config, key)
    args.update(config.engine_args)
    return args


class VLLMEngine:
    """vLLM's continuous batching, paged KV cache and kernels behind the TextEngine interface.

    Create it in the process (and event loop) that serves requests: the runtime replica.
    """

    def __init__(self, model_dir: Path, *, model_name: str, config: VLLMRuntimeConfig, device: Device) -> None:
        from transformers import AutoTokenizer
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        # vLLM reports usage statistics to its authors unless told not to; a serving stack must not phone home.
        os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
        self.model_name = model_name
        self.metrics = VLLMMetrics(model_name)
        kwargs = engine_args(config, model_dir, model_name=model_name, device=device)
        try:
            args = AsyncEngineArgs(**kwargs)
        except TypeError as exc:  # an engine_args key this vLLM does not know
            raise ValueError(f"runtimes.{model_name}.engine_args: {exc}") from exc
        self._tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self._token_chars = max_token_chars(self._tokenizer)
        self._llm = AsyncLLM.from_engine_args(args, stat_loggers=[self.metrics.stat_logger])
        self.max_model_len = int(self._llm.model_config.max_model_len)
        self._vocab_size = int(self._llm.model_config.get_vocab_size())

    def render_chat(self, messages: tuple[ChatMessage, ...]) -> str:
        return render_chat(self._tokenizer, messages, self.model_name)

    def unfinished_requests(self) -> int:
        """Requests the engine still holds (running or waiting)."""
        return self._llm.get_num_unfinished_requests()

    async def generate(
        self, prompt: str, params: SamplingParams, request_id: str, *, prompt_param: str = "prompt"
    ) -> AsyncIterator[TokenDelta]:
        from vllm.exceptions import VLLMClientError
        from vllm.inputs import TokensPrompt
        from vllm.v1.engine.exceptions import EngineDeadError, EngineGenerateError

        check_params(params, self._vocab_size)
        prompt_ids = await tokenize(
            self._tokenizer, prompt, max_tokens=params.max_tokens, limit=self.max_model_len,
            model_name=self.model_name, token_chars=self._token_chars, param=prompt_param,
        )  # fmt: skip
        completion_tokens = 0
        try:
            stream = self._llm.generate(TokensPrompt(prompt_token_ids=prompt_ids), self._sampling(params), request_id)
            async with aclosing(stream) as outputs:
                async for out in outputs:
                    choice = out.outputs[0]
                    completion_tokens += len(choice.token_ids)
                    finish = choice.finish_reason
                    yield TokenDelta(
                        choice.text,
                        None if finish is None else ("length" if finish == "length" else "stop"),
                        len(prompt_ids),
                        completion_tokens,
                    )
                    if finish is not None:
                        return
        except VLLMClientError as exc:
            raise InvalidRequest(f"{self.model_name}: {exc}") from None
        except (EngineDeadError, EngineGenerateError) as exc:
            logger.error("runtime %s: vLLM failed request %s", self.model_name, request_id, exc_info=exc)
            raise EngineError(f"generation failed in {self.model_name}; the runtime log has the details") from None

    def _sampling(self, params: SamplingParams):
        from vllm import SamplingParams as VLLMSamplingParams
        from vllm.sampling_params import RequestOutputKind

        return VLLMSamplingParams(
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            seed=params.seed,
            stop=list(params.stop) or None,
            presence_penalty=params.presence_penalty,
            frequency_penalty=params.frequency_penalty,
            logit_bias=dict(params.logit_bias) or None,
            output_kind=RequestOutputKind.DELTA,
        )

    async def close(self) -> None:
        self._llm.shutdown()
