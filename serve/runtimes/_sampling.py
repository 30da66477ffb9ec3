"""Next-token selection for a batch whose rows each carry their own decoding parameters.

First each row's logit adjustments (``logit_bias``, then the presence and frequency penalties
over the tokens its completion has produced; see :class:`SamplingParams`). Then greedy rows
(``temperature == 0``, or below ``GREEDY_BELOW``, where dividing the logits by it would overflow)
take the argmax. Sampled rows apply temperature and nucleus (top-p) filtering and draw from
their own ``torch.Generator``, so a seeded request produces the same tokens whichever other
requests share its batch.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence

import torch

from serve.runtimes.engine import SamplingParams

GREEDY_BELOW = 1e-5


def make_generator(params: SamplingParams) -> torch.Generator | None:
    """The request's private random stream, or None for greedy decoding."""
    if params.temperature < GREEDY_BELOW:
        return None
    generator = torch.Generator()
    generator.manual_seed(params.seed if params.seed is not None else secrets.randbits(63))
    return generator


def sample(
    logits: torch.Tensor,
    params: Sequence[SamplingParams],
    generators: Sequence[torch.Generator | None],
    counts: Sequence[Mapping[int, int]] | None = None,
) -> list[int]:
    """Pick one token per row of ``logits`` (shape ``[batch, vocab]``). ``counts``: per row, how
    often each token id occurs in the completion so far (needed for penalised rows)."""
    adjusted = [row for row, p in enumerate(params) if p.logit_bias or p.penalised]
    if adjusted:
        logits = logits.float().clone()  # the model's output stays as it was
        for row in adjusted:
            adjust(logits[row], params[row], counts[row] if counts is not None else {})
    tokens = logits.argmax(dim=-1)
    for row, (row_params, generator) in enumerate(zip(params, generators, strict=True)):
        if generator is not None:
            tokens[row] = _sample_row(logits[row], row_params.temperature, row_params.top_p, generator)
    return tokens.tolist()


def adjust(logits: torch.Tensor, params: SamplingParams, counts: Mapping[int, int]) -> None:
    """Apply ``params``' logit bias and penalties to one row of logits, in place."""
    if params.logit_bias:
        ids, bias = zip(*params.logit_bias, strict=True)
        logits.index_add_(0, torch.tensor(ids), torch.tensor(bias, dtype=logits.dtype))
    if params.penalised and counts:
        ids = torch.tensor(list(counts))
        seen = torch.tensor(list(counts.values()), dtype=logits.dtype)
        logits.index_add_(0, ids, -(params.frequency_penalty * seen + params.presence_penalty))


def _sample_row(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> int:
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p >= 1.0:
        return int(torch.multinomial(probs, 1, generator=generator))
    sorted_probs, order = probs.sort(descending=True, stable=True)
    # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
    outside = sorted_probs.cumsum(0) - sorted_probs >= top_p
    sorted_probs[outside] = 0.0
    return int(order[torch.multinomial(sorted_probs, 1, generator=generator)])
