"""Token ids to text, piece by piece, as the worker's tokens arrive in the HTTP process."""

from __future__ import annotations


class Detokenizer:
    """Incremental decoding whose pieces add up to ``tokenizer.decode(tokens,
    skip_special_tokens=True)``, transformers' text (og's TokenizerStream drops the bytes of
    invalid UTF-8 and the text after them, so its pieces can differ from it). A piece is released
    once it no longer ends inside a multi-byte character (the windowed scheme of TGI and vLLM)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.tokens: list[int] = []
        self.prefix = 0  # start of the window decoded for context
        self.read = 0  # tokens whose text has been released

    def _decode(self, start: int, end: int | None = None) -> str:
        return self.tokenizer.decode(self.tokens[start:end], skip_special_tokens=True)

    def add(self, token: int) -> str:
        self.tokens.append(token)
        before = self._decode(self.prefix, self.read)
        after = self._decode(self.prefix)
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.tokens)
            return after[len(before) :]
        return ""

    def flush(self) -> str:
        """What is still held at the end (an incomplete character decodes as U+FFFD, as in transformers)."""
        if self.read == len(self.tokens):
            return ""
        before = self._decode(self.prefix, self.read)
        after = self._decode(self.prefix)
        self.prefix = self.read = len(self.tokens)
        return after[len(before) :]
