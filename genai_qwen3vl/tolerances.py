"""Parity tolerances, in one place, keyed by precision.

Each entry is the largest max-abs difference against transformers that passes:
``vision`` (every feature set), ``embedding``, ``decoder`` (raw ORT logits, prefill and decode
steps) and ``end_to_end`` (og's logits at every generated step, via the stock og API).
``token_steps`` is how many greedy steps must agree token for token.
"""

from __future__ import annotations

import dataclasses


class Bound(float):
    """An absolute tolerance, widened for large values by a relative part: a difference ``d``
    against a reference whose largest magnitude is ``scale`` passes when
    ``d <= max(absolute, relative * scale)``. fp32 rounding grows with the values (logits of a
    real 2048-wide model are ~10x a tiny test model's); the tiny models stay under ``absolute``."""

    relative: float

    def __new__(cls, absolute: float, relative: float = 0.0) -> "Bound":
        bound = float.__new__(cls, absolute)
        bound.relative = relative
        return bound

    def limit(self, scale: float) -> float:
        return max(float(self), self.relative * scale)


@dataclasses.dataclass(frozen=True)
class Tolerance:
    vision: Bound
    embedding: Bound
    decoder: Bound
    end_to_end: Bound
    token_steps: int


_FP32 = Bound(1e-4, 5e-6)
TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(vision=_FP32, embedding=Bound(1e-6), decoder=_FP32, end_to_end=_FP32, token_steps=16),
    # against transformers run on the dequantized int4 weights, with accuracy_level=1 (fp32
    # activations): the quantized graph must compute exactly that; vision/embedding stay fp32
    "int4": Tolerance(vision=_FP32, embedding=Bound(1e-6), decoder=_FP32, end_to_end=_FP32, token_steps=16),
    # against transformers in the same dtype (fp16 on CPU here; the two differ in summation
    # order and in where they round, so a few fp16 ulps of the logits' scale)
    "fp16": Tolerance(
        vision=Bound(2e-2, 4e-3), embedding=Bound(2e-3), decoder=Bound(2e-2, 4e-3), end_to_end=Bound(2e-2, 4e-3), token_steps=16
    ),
    # bf16 decoders; their vision/embedding graphs compute in fp32 and round features to bf16
    "bf16": Tolerance(
        vision=Bound(5e-2, 8e-3), embedding=Bound(2e-2), decoder=Bound(1e-1, 2e-2), end_to_end=Bound(1e-1, 2e-2), token_steps=8
    ),
}


def tolerance(precision: str) -> Tolerance:
    try:
        return TOLERANCES[precision]
    except KeyError:
        raise KeyError(f"no parity tolerances for precision {precision!r}; add them to tolerances.TOLERANCES") from None
