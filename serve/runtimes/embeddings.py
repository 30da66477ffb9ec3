"""SentenceEmbedder: an :class:`~serve.runtimes.engine.EmbeddingEngine` for sentence-transformers
style encoders (mean pooling over real tokens, then L2 normalisation), on CPU.

The default model is the bundled all-MiniLM-L6-v2 (384 dimensions); nothing is downloaded.

    >>> embedder = SentenceEmbedder(model_name="all-minilm-l6-v2")  # doctest: +SKIP
    >>> result = await embedder.embed(["a cat sat on the mat"])       # doctest: +SKIP
    >>> len(result.vectors[0]), result.prompt_tokens                 # doctest: +SKIP
    (384, 9)
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer

from serve.runtimes.engine import EmbeddingResult, InvalidRequest
from serve.runtimes.tiny import minilm_path


class SentenceEmbedder:
    """Embeds texts in chunks of ``batch_size``, truncating each to the model's maximum length."""

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        model_name: str,
        batch_size: int = 32,
        torch_threads: int | None = None,
    ) -> None:
        if torch_threads is not None:
            torch.set_num_threads(torch_threads)
        model_dir = model_dir or minilm_path()
        self.model_name = model_name
        self._tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self._model = AutoModel.from_pretrained(model_dir, local_files_only=True)
        self._model.eval()
        self.dimensions: int = self._model.config.hidden_size
        self._max_length = min(self._tokenizer.model_max_length, self._model.config.max_position_embeddings)
        self._batch_size = batch_size
        # One forward at a time: the tokenizer is not safe to share between threads, and CPU cores
        # are better spent on one large batch than on competing small ones.
        self._lock = threading.Lock()

    async def embed(self, texts: list[str]) -> EmbeddingResult:
        if not texts:
            raise InvalidRequest("input must contain at least one text", param="input")
        return await asyncio.to_thread(self._embed, texts)

    async def close(self) -> None:
        """Nothing to release: the model lives as long as this object."""

    def _embed(self, texts: list[str]) -> EmbeddingResult:
        vectors: list[list[float]] = []
        tokens = 0
        with self._lock, torch.inference_mode():
            for start in range(0, len(texts), self._batch_size):
                chunk, chunk_tokens = self._embed_chunk(texts[start : start + self._batch_size])
                vectors += chunk.tolist()
                tokens += chunk_tokens
        return EmbeddingResult(vectors=vectors, prompt_tokens=tokens)

    def _embed_chunk(self, texts: list[str]) -> tuple[torch.Tensor, int]:
        encoded = self._tokenizer(
            texts, padding=True, truncation=True, max_length=self._max_length, return_tensors="pt"
        )
        hidden = self._model(**encoded).last_hidden_state  # [batch, tokens, dim]
        mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=1), int(encoded["attention_mask"].sum())
