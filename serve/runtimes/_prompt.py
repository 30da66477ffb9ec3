"""Prompts, the same for every text engine: chat messages through the tokenizer's chat template,
prompt text to token ids, and the context-length check with the numbers in its message.

Both engines use these, so a chat request renders to the same prompt and a too-long prompt
fails with the same 400 whichever engine serves the model.

:func:`tokenize` checks the length before it tokenizes: no token of the vocabulary is longer
than :func:`max_token_chars` characters, so a prompt of more than ``limit`` times that many
characters has more than ``limit`` tokens for sure, and is refused at once, without the work.
A long prompt that may fit is tokenized in a worker thread, off the caller's event loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

from jinja2 import TemplateError

from serve.runtimes.engine import ChatMessage, InvalidRequest, SamplingParams


def render_chat(tokenizer: Any, messages: tuple[ChatMessage, ...], model_name: str) -> str:
    """The tokenizer's chat template with the generation prompt; ``role: content`` lines when the
    model has no template."""
    if not tokenizer.chat_template:
        return "".join(f"{m.role}: {m.content}\n" for m in messages) + "assistant:"
    conversation = [{"role": m.role, "content": m.content} for m in messages]
    try:
        return tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    except TemplateError as exc:
        raise InvalidRequest(f"messages cannot be formatted for {model_name}: {exc}", param="messages") from exc


def encode(tokenizer: Any, prompt: str) -> list[int]:
    """Token ids of ``prompt``; BOS is added unless the prompt (a rendered chat template,
    usually) already starts with it."""
    bos = tokenizer.bos_token
    return tokenizer.encode(prompt, add_special_tokens=not (bos and prompt.startswith(bos)))


INLINE_CHARS = 8192  # shorter prompts tokenize in well under a millisecond: not worth a thread hop


def max_token_chars(tokenizer: Any) -> int:
    """The longest token of the vocabulary, in characters of its string form (byte-level BPE and
    SentencePiece write one character per byte or piece, so a token decodes to at most this many)."""
    return max((len(token) for token in tokenizer.get_vocab()), default=1) or 1


async def tokenize(
    tokenizer: Any, prompt: str, *, max_tokens: int, limit: int, model_name: str, token_chars: int, param: str
) -> list[int]:
    """Token ids of ``prompt`` that fit the context with ``max_tokens`` more, or the 400 saying why not."""
    at_least = -(-len(prompt) // token_chars)
    if at_least >= limit:
        raise InvalidRequest(
            f"the prompt has at least {at_least} tokens ({len(prompt)} characters); {model_name} accepts at most "
            f"{limit}", param=param,
        )  # fmt: skip
    ids = encode(tokenizer, prompt) if len(prompt) <= INLINE_CHARS else await asyncio.to_thread(encode, tokenizer, prompt)
    error = length_error(len(ids), max_tokens, limit, model_name, param=param)
    if error is not None:
        raise error
    return ids


def length_error(
    prompt_tokens: int, max_tokens: int, limit: int, model_name: str, *, param: str = "messages"
) -> InvalidRequest | None:
    """Why a prompt of ``prompt_tokens`` plus ``max_tokens`` does not fit a ``limit``-token context
    (``param``: ``messages`` for chat, ``prompt`` for completions)."""
    if prompt_tokens == 0:
        return InvalidRequest("the prompt is empty", param=param)
    if prompt_tokens >= limit:
        return InvalidRequest(
            f"the prompt has {prompt_tokens} tokens; {model_name} accepts at most {limit}", param=param
        )
    if prompt_tokens + max_tokens > limit:
        return InvalidRequest(
            f"prompt ({prompt_tokens} tokens) + max_tokens ({max_tokens}) exceeds the model's context length"
            f" of {limit} tokens; lower max_tokens to at most {limit - prompt_tokens}",
            param="max_tokens",
        )
    return None


def check_params(params: SamplingParams, vocab_size: int) -> None:
    """The parameters a runtime cannot serve, as a 400 naming the parameter (the gateway has
    checked their ranges already; direct callers of an engine have not)."""
    if params.max_tokens < 1:
        raise InvalidRequest("max_tokens must be at least 1", param="max_tokens")
    if params.temperature < 0:
        raise InvalidRequest("temperature must be >= 0", param="temperature")
    if not 0 < params.top_p <= 1:
        raise InvalidRequest("top_p must be in (0, 1]", param="top_p")
    for name in ("presence_penalty", "frequency_penalty"):
        if not -2 <= getattr(params, name) <= 2:
            raise InvalidRequest(f"{name} must be in [-2, 2]", param=name)
    outside = [token for token, _ in params.logit_bias if not 0 <= token < vocab_size]
    if outside:
        raise InvalidRequest(
            f"logit_bias names token ids outside the model's vocabulary (0 to {vocab_size - 1}): "
            + ", ".join(map(str, outside[:5])) + (", ..." if len(outside) > 5 else ""),
            param="logit_bias",
        )
