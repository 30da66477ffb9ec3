"""Next-token selection for a batch whose rows each carry their own decoding parameters.

Greedy rows (``temperature == 0``, or below ``GREEDY_BELOW``, where dividing the logits by it
would overflow) take the argmax. Sampled rows apply temperature and nucleus
(top-p) filtering and draw from their own ``torch.Generator``, so a seeded request produces the
same tokens whichever other requests share its batch.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

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
    logits: torch.Tensor, params: Sequence[SamplingParams], generators: Sequence[torch.Generator | None]
) -> list[int]:
    """Pick one token per row of ``logits`` (shape ``[batch, vocab]``)."""
    tokens = logits.argmax(dim=-1)
    for row, (row_params, generator) in enumerate(zip(params, generators, strict=True)):
        if generator is not None:
            tokens[row] = _sample_row(logits[row], row_params.temperature, row_params.top_p, generator)
    return tokens.tolist()


def _sample_row(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> int:
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p >= 1.0:
        return int(torch.multinomial(probs, 1, generator=generator))
    sorted_probs, order = probs.sort(descending=True, stable=True)
    # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
    outside = sorted_probs.cumsum(0) - sorted_probs >= top_p
    sorted_probs[outside] = 0.0
    return int(order[torch.multinomial(sorted_probs, 1, generator=generator)])
