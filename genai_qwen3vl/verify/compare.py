"""Measuring differences: max |difference| with the reference's scale, the tolerance test, and
an onnxruntime session that speaks float32 whatever the graph's float type."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ParityError


class Float32Session:
    """An ORT CPU session that takes and returns float32 whatever float type the graph uses
    (fp16 graphs get fp16 inputs; outputs come back as float32 for comparison)."""

    _TYPES = {"tensor(float16)": np.float16, "tensor(float)": np.float32}

    def __init__(self, path: Path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_types = {i.name: i.type for i in self.session.get_inputs()}

    def get_outputs(self):
        return self.session.get_outputs()

    def run(self, _, feeds: dict) -> list[np.ndarray]:
        cast = {}
        for name, value in feeds.items():
            want = self._TYPES.get(self.input_types.get(name, ""))
            cast[name] = value.astype(want) if want is not None and np.issubdtype(value.dtype, np.floating) else value
        return [o.astype(np.float32) if np.issubdtype(o.dtype, np.floating) else o for o in self.session.run(None, cast)]


class Diff(float):
    """A max |difference|, carrying ``scale``: the reference's largest magnitude."""

    scale: float

    def __new__(cls, value: float, scale: float = 0.0) -> "Diff":
        diff = float.__new__(cls, value)
        diff.scale = scale
        return diff


def maxdiff(a, b) -> Diff:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ParityError(f"shape mismatch: {a.shape} vs {b.shape}")
    if not a.size:
        return Diff(0.0)
    return Diff(float(np.abs(a - b).max()), float(np.abs(b).max()))


def limit_at(bound: float, diff: float) -> float:
    """The tolerance ``bound`` at ``diff``'s scale (a ``Bound``'s relative part widens it; a plain
    number is absolute)."""
    return bound.limit(getattr(diff, "scale", 0.0)) if hasattr(bound, "limit") else float(bound)


def within(diff: float, bound: float) -> bool:
    """``diff <= bound``, with the bound widened by its relative part at the diff's scale."""
    return diff <= limit_at(bound, diff)


def assert_within(report: dict[str, float], tolerance: float, what: str) -> None:
    bad = {k: v for k, v in report.items() if not within(v, tolerance)}
    if bad:
        listing = ", ".join(f"{k}: {v:.3g}" for k, v in report.items())
        raise ParityError(f"{what} differs from transformers beyond {tolerance:g} in {sorted(bad)} ({listing})")
