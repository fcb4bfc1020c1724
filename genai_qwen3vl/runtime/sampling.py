"""The ranges of the sampling options, declared once: the chat command's flags, ``ChatSession``'s
generation call and the server's request fields all check against this table, so a value one
entry point refuses is refused by all of them, with the same words.

    check("temperature", -1)   # SamplingError: 'temperature' must be >= 0.0, got -1.0
"""

from __future__ import annotations

import dataclasses
import math

from ..errors import SamplingError


@dataclasses.dataclass(frozen=True)
class Bound:
    """A finite number of ``kind`` in [low, high] (``low_open``: (low, high]); None: unbounded."""

    kind: type  # int or float
    low: float | None = None
    high: float | None = None
    low_open: bool = False

    def check(self, name: str, value) -> int | float:
        """``value`` as ``kind``, or a SamplingError (a ValueError) naming ``name``, the range and the value."""
        what = "an integer" if self.kind is int else "a number"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SamplingError(f"'{name}' must be {what}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise SamplingError(f"'{name}' must be a finite number, got {value}")
        if self.kind is int and isinstance(value, float) and not value.is_integer():
            raise SamplingError(f"'{name}' must be {what}, got {value}")
        value = self.kind(value)
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            raise SamplingError(f"'{name}' must be {'>' if self.low_open else '>='} {self.low}, got {value}")
        if self.high is not None and value > self.high:
            raise SamplingError(f"'{name}' must be <= {self.high}, got {value}")
        return value


INT32_MAX = 2**31 - 1  # og's integer search options are 32-bit

# temperature 0 means greedy; top_k -1 or 0 means no top-k cut; seed is og's random_seed
BOUNDS = {
    "temperature": Bound(float, 0.0, 2.0),
    "top_p": Bound(float, 0.0, 1.0, low_open=True),
    "top_k": Bound(int, -1, INT32_MAX),
    "repetition_penalty": Bound(float, 0.0, 1e6, low_open=True),
    "seed": Bound(int, 0, INT32_MAX),
}


def check(name: str, value) -> int | float:
    """``value`` checked against ``BOUNDS[name]`` (a SamplingError naming the problem otherwise)."""
    return BOUNDS[name].check(name, value)


def check_search_options(options: dict) -> dict:
    """og search options (``GeneratorParams.set_search_options`` keywords) with every sampling
    value in ``BOUNDS`` checked; og's own name ``random_seed`` is checked as ``seed``."""
    for key, value in options.items():
        name = "seed" if key == "random_seed" else key
        if name in BOUNDS:
            check(name, value)
    return options


def argparse_type(name: str):
    """An argparse ``type=`` that parses a flag's text and checks it against ``BOUNDS[name]``."""
    import argparse

    bound = BOUNDS[name]

    def parse(text: str):
        try:
            value = bound.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if bound.kind is int else 'a number'}") from None
        try:
            return bound.check(name, value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = name  # argparse names the type in its messages
    return parse
