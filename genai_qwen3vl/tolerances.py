"""Parity tolerances, in one place, keyed by precision.

Each entry is the largest max-abs difference against transformers that passes:
``vision`` (every feature set), ``embedding``, ``decoder`` (raw ORT logits, prefill and decode
steps) and ``end_to_end`` (og's logits at every generated step, via the stock og API).
``token_steps`` is how many greedy steps must agree token for token.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Tolerance:
    vision: float
    embedding: float
    decoder: float
    end_to_end: float
    token_steps: int


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(vision=1e-4, embedding=1e-6, decoder=1e-4, end_to_end=1e-4, token_steps=16),
    # against transformers run on the dequantized int4 weights, with accuracy_level=1 (fp32
    # activations): the quantized graph must compute exactly that; vision/embedding stay fp32
    "int4": Tolerance(vision=1e-4, embedding=1e-6, decoder=1e-4, end_to_end=1e-4, token_steps=16),
    # against transformers in the same dtype (fp16 on CPU here; the two differ in summation
    # order and in where they round, so a few fp16 ulps of the logits' scale)
    "fp16": Tolerance(vision=2e-2, embedding=2e-3, decoder=2e-2, end_to_end=2e-2, token_steps=16),
    # bf16 decoders; their vision/embedding graphs compute in fp32 and round features to bf16
    "bf16": Tolerance(vision=5e-2, embedding=2e-2, decoder=1e-1, end_to_end=1e-1, token_steps=8),
}


def tolerance(precision: str) -> Tolerance:
    try:
        return TOLERANCES[precision]
    except KeyError:
        raise KeyError(f"no parity tolerances for precision {precision!r}; add them to tolerances.TOLERANCES") from None
