"""Streaming text out of generated token ids: incremental detokenisation and stop sequences.

Decoding a single token in isolation is wrong for many tokenizers (a UTF-8 character split over
byte-level tokens, SentencePiece's leading spaces), and decoding the whole sequence every step
costs O(n) per token. :class:`TextStream` decodes a short window (the previous emitted token(s)
plus the new ones) and emits the difference, holding text back while it ends in an incomplete
character (U+FFFD) or could still be the start of a stop sequence.
"""

from __future__ import annotations

from typing import Any

_INCOMPLETE = "\ufffd"


class TextStream:
    """Text deltas for one generation. ``tokenizer`` is a Hugging Face tokenizer.

    >>> stream = TextStream(tokenizer, stop=("\\n\\n",))  # doctest: +SKIP
    >>> text, stopped = stream.push(token_id)             # doctest: +SKIP
    >>> tail = stream.finish()                            # at EOS or max_tokens  # doctest: +SKIP
    """

    def __init__(self, tokenizer: Any, stop: tuple[str, ...] = ()) -> None:
        self._tokenizer = tokenizer
        self._stop = tuple(s for s in stop if s)
        self._longest_stop = max((len(s) for s in self._stop), default=0)
        self._ids: list[int] = []
        self._prefix = 0  # window start: context for decoding the new tokens
        self._read = 0  # tokens before this index are already part of self._text
        self._prefix_text = ""
        self._text = ""  # all complete text decoded so far
        self._sent = 0  # characters of self._text already returned

    def push(self, token_id: int) -> tuple[str, bool]:
        """Add a generated token; return the text now safe to emit and whether a stop sequence matched
        (the stop text and everything after it are dropped)."""
        self._ids.append(token_id)
        window = self._decode(self._prefix)
        if len(window) > len(self._prefix_text) and not window.endswith(_INCOMPLETE):
            self._text += window[len(self._prefix_text) :]
            self._prefix, self._read = self._read, len(self._ids)
            self._prefix_text = self._decode(self._prefix)
        return self._release(final=False)

    def finish(self) -> str:
        """Flush at the end of the generation (EOS or max_tokens): held-back text, even incomplete
        characters, is emitted unless it completes a stop sequence."""
        window = self._decode(self._prefix)
        self._text += window[len(self._prefix_text) :]
        self._prefix = self._read = len(self._ids)
        self._prefix_text = ""
        text, _ = self._release(final=True)
        return text

    def _decode(self, start: int) -> str:
        return self._tokenizer.decode(self._ids[start:], skip_special_tokens=True)

    def _release(self, *, final: bool) -> tuple[str, bool]:
        text, sent = self._text, self._sent
        hits = [i for s in self._stop if (i := text.find(s, max(sent - self._longest_stop + 1, 0))) >= 0]
        if hits:
            self._sent = len(text)
            return text[sent : max(min(hits), sent)], True
        end = len(text) if final else len(text) - self._stop_prefix_len(text[sent:])
        self._sent = end
        return text[sent:end], False

    def _stop_prefix_len(self, pending: str) -> int:
        """Length of the longest suffix of ``pending`` that a stop sequence starts with."""
        for size in range(min(len(pending), self._longest_stop - 1), 0, -1):
            if any(s.startswith(pending[-size:]) for s in self._stop):
                return size
        return 0
