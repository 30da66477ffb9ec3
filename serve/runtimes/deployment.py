"""Ray Serve deployments that host engines: one Serve application per configured runtime.

The gateway reaches them through deployment handles (``serve.providers.local``); they have no
HTTP route of their own unless one is asked for (the gateway-hop benchmark does).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import replace
from pathlib import Path

from ray import serve
from ray.serve.deployment import Application

from serve.config import RuntimeConfig, VLLMRuntimeConfig
from serve.runtimes.engine import EmbeddingResult, GenerateRequest, TokenDelta
from serve.runtimes.placement import Device, cluster_device, node_capacities, replica_placement

TEXT_DEPLOYMENT = "TextRuntime"
DEFAULT_MAX_TOKENS = 256  # when a chat request sets no limit
EMBED_DEPLOYMENT = "EmbeddingRuntime"


class TextRuntime:
    """Hosts a :class:`~serve.runtimes.engine.TextEngine`: the CPU engine or vLLM (``engine``)."""

    def __init__(self, name: str, config: RuntimeConfig, home: str, device: Device = "cpu") -> None:
        from serve.runtimes.tiny import resolve_model

        model_dir = resolve_model(config.model, Path(home))
        if config.engine == "vllm":
            from serve.runtimes.vllm import VLLMEngine

            self.engine = VLLMEngine(model_dir, model_name=name, config=config, device=device)
        else:
            from serve.runtimes.cpu import CPUEngine

            self.engine = CPUEngine(
                model_dir,
                model_name=name,
                max_num_seqs=config.max_num_seqs,
                max_model_len=config.max_model_len,
                torch_threads=config.torch_threads,
                dtype=config.dtype,
            )

    async def generate(self, request: GenerateRequest) -> AsyncIterator[TokenDelta]:
        prompt = request.prompt if request.messages is None else self.engine.render_chat(request.messages)
        params = request.params
        if params.max_tokens is None:
            params = replace(params, max_tokens=DEFAULT_MAX_TOKENS)
        # aclosing: a cancelled caller frees its batch slot now, not when the generator is collected
        param = "prompt" if request.messages is None else "messages"
        async with aclosing(self.engine.generate(prompt, params, request.request_id, prompt_param=param)) as deltas:
            async for delta in deltas:
                yield delta

    def unfinished_requests(self) -> int:
        """Requests the engine holds now (running or waiting); 0 once aborted ones are freed."""
        return self.engine.unfinished_requests()

    def metrics(self) -> bytes:
        """This replica's engine metrics in the Prometheus text format (empty for the CPU engine)."""
        metrics = getattr(self.engine, "metrics", None)
        return metrics.render() if metrics is not None else b""

    async def __call__(self, http_request) -> dict:
        """Plain HTTP access (only when deployed with a route prefix): {"prompt", "max_tokens"}."""
        from serve.runtimes.engine import SamplingParams

        body = await http_request.json()
        params = SamplingParams(max_tokens=int(body.get("max_tokens", 16)), temperature=float(body.get("temperature", 0)))
        text, last = [], None
        async for delta in self.engine.generate(str(body["prompt"]), params, "direct"):
            text.append(delta.text)
            last = delta
        return {"text": "".join(text), "completion_tokens": last.completion_tokens if last else 0}

    async def __del__(self) -> None:
        await self.engine.close()


class EmbeddingRuntime:
    """Hosts an :class:`~serve.runtimes.engine.EmbeddingEngine`."""

    def __init__(self, name: str, config: RuntimeConfig, home: str) -> None:
        from serve.runtimes.embeddings import SentenceEmbedder
        from serve.runtimes.tiny import resolve_model

        self.engine = SentenceEmbedder(resolve_model(config.model, Path(home)), model_name=name)

    async def embed(self, texts: list[str]) -> EmbeddingResult:
        return await self.engine.embed(texts)

    async def __del__(self) -> None:
        await self.engine.close()


def deployment_name(config: RuntimeConfig) -> str:
    return TEXT_DEPLOYMENT if config.task == "generate" else EMBED_DEPLOYMENT


def build_runtime(name: str, config: RuntimeConfig, home: Path) -> Application:
    """The Serve application of one runtime. Call with Ray initialised (a vLLM runtime's placement
    depends on the cluster's nodes)."""
    if config.engine == "vllm":
        return _build_vllm(name, config, home)
    cls = TextRuntime if config.task == "generate" else EmbeddingRuntime
    per_replica = config.max_num_seqs * 4 if config.task == "generate" else 64
    deployment = serve.deployment(
        cls,
        name=deployment_name(config),
        num_replicas=config.replicas,
        ray_actor_options={"num_cpus": config.num_cpus},
        max_ongoing_requests=per_replica,
        graceful_shutdown_wait_loop_s=0.5,
        graceful_shutdown_timeout_s=120,
        health_check_period_s=10,
    )
    return deployment.bind(name, config, str(home))


def _build_vllm(name: str, config: VLLMRuntimeConfig, home: Path) -> Application:
    """One placement group per replica (``serve.runtimes.placement``); the replica process runs in
    its first bundle, vLLM's workers in the others."""
    device = cluster_device(config.accelerator_type)
    gpus, cpus = node_capacities()
    placement = replica_placement(
        tensor_parallel_size=config.tensor_parallel_size,
        pipeline_parallel_size=config.pipeline_parallel_size,
        num_cpus=config.num_cpus,
        accelerator_type=config.accelerator_type,
        device=device,
        gpus_per_node=gpus,
        cpus_per_node=cpus,
    )
    scaling: dict = {"num_replicas": config.replicas}
    if config.autoscaling is not None:
        scaling = {"num_replicas": "auto", "autoscaling_config": config.autoscaling.model_dump()}
    deployment = serve.deployment(
        TextRuntime,
        name=TEXT_DEPLOYMENT,
        ray_actor_options={"num_cpus": config.num_cpus},
        placement_group_bundles=placement.bundles,
        placement_group_strategy=placement.strategy,
        max_ongoing_requests=config.max_num_seqs * 4,
        graceful_shutdown_wait_loop_s=0.5,
        graceful_shutdown_timeout_s=120,
        health_check_period_s=10,
        health_check_timeout_s=60,
        **scaling,
    )
    return deployment.bind(name, config, str(home), device)
