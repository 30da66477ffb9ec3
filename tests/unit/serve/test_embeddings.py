"""SentenceEmbedder on the bundled all-MiniLM-L6-v2: the vectors sentence-transformers users expect."""

from __future__ import annotations

import pytest
import torch

from serve.runtimes.embeddings import SentenceEmbedder
from serve.runtimes.engine import EmbeddingEngine, InvalidRequest
from serve.runtimes.tiny import minilm_path

pytestmark = pytest.mark.timeout(120)

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome.",
    "The stock market fell sharply on Monday.",
    "A cat sleeps on the sofa.",
]


@pytest.fixture(scope="module")
def embedder() -> SentenceEmbedder:
    return SentenceEmbedder(model_name="all-minilm-l6-v2", batch_size=2)  # small chunks: 5 texts → 3 forwards


async def test_vectors_are_384_dimensional_unit_vectors(embedder: SentenceEmbedder) -> None:
    assert isinstance(embedder, EmbeddingEngine)
    assert embedder.dimensions == 384
    result = await embedder.embed(SENTENCES)
    vectors = torch.tensor(result.vectors)
    assert vectors.shape == (5, 384)
    assert torch.allclose(vectors.norm(dim=1), torch.ones(5), atol=1e-5)


async def test_a_batch_equals_its_texts_embedded_one_by_one(embedder: SentenceEmbedder) -> None:
    batch = await embedder.embed(SENTENCES)
    singles = [(await embedder.embed([text])).vectors[0] for text in SENTENCES]
    assert torch.allclose(torch.tensor(batch.vectors), torch.tensor(singles), atol=1e-5)


async def test_similar_sentences_are_closer_than_unrelated_ones(embedder: SentenceEmbedder) -> None:
    food, bread, movie, stocks, _ = torch.tensor((await embedder.embed(SENTENCES)).vectors)
    assert food @ bread > 0.6
    assert food @ bread > max(food @ movie, food @ stocks) + 0.4


async def test_token_counts_are_the_real_tokens(embedder: SentenceEmbedder) -> None:
    assert (await embedder.embed(["hello world"])).prompt_tokens == 4  # [CLS] hello world [SEP]
    assert (await embedder.embed(["hello world", "hello"])).prompt_tokens == 7  # padding is not counted


async def test_long_texts_are_truncated_to_the_model_limit(embedder: SentenceEmbedder) -> None:
    result = await embedder.embed(["word " * 2000, "short"])
    assert result.prompt_tokens == 512 + 3
    assert len(result.vectors) == 2


async def test_an_empty_input_list_is_rejected(embedder: SentenceEmbedder) -> None:
    with pytest.raises(InvalidRequest) as error:
        await embedder.embed([])
    assert (error.value.param, error.value.status) == ("input", 400)


@pytest.mark.slow  # importing sentence-transformers takes ~10 s
async def test_vectors_match_sentence_transformers(embedder: SentenceEmbedder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer  # the reference pipeline the model ships for

    reference = SentenceTransformer(str(minilm_path()), device="cpu").encode(SENTENCES, convert_to_tensor=True)
    ours = torch.tensor((await embedder.embed(SENTENCES)).vectors)
    assert torch.allclose(ours, reference, atol=1e-5)
