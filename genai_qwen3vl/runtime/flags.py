"""The argparse helpers every command shares (export, chat, serve): a flag in both spellings, and
number types whose refusal argparse turns into one line and exit 2. Only the standard library,
so that the runtime tier's commands need nothing from ``genai_qwen3vl.cli``."""

from __future__ import annotations

import argparse
import math

MAX_SECONDS = 10**6  # any timeout flag (11 days; Python's waits refuse near-infinite ones)


def add_flag(parser, name: str, *short: str, dashes: bool = True, **kwargs) -> None:
    """``--name`` in the command's spelling (``dashes``: --max-length, else og's --max_length);
    the other spelling is accepted too, unlisted in --help."""
    dest = name.replace("-", "_")
    dashed = name.replace("_", "-")
    primary, alias = (dashed, dest) if dashes else (dest, dashed)
    parser.add_argument(*short, f"--{primary}", dest=dest, **kwargs)
    if alias != primary:
        hidden = {k: v for k, v in kwargs.items() if k not in ("help", "default", "required", "metavar")}
        parser.add_argument(f"--{alias}", dest=dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **hidden)


def positive(kind, low: int = 1, high: float | None = None):
    """An argparse type: a whole number (``kind`` int) in [low, high], or a finite number of
    seconds (float) > 0 and at most ``high`` (default ``MAX_SECONDS``)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'number' if kind is float else 'whole number'}") from None
        if kind is float and not (math.isfinite(value) and 0 < value <= (high or MAX_SECONDS)):
            raise argparse.ArgumentTypeError(f"must be a number of seconds > 0 and at most {high or MAX_SECONDS}, got {text}")
        if kind is int and (value < low or (high is not None and value > high)):
            raise argparse.ArgumentTypeError(f"must be >= {low}{'' if high is None else f' and <= {high}'}, got {text}")
        return value

    return parse
