"""Generated pictures, seeded: what ``--validate`` asks its end-to-end questions about (and the
demo, the tests and the benchmarks, through ``genai_qwen3vl.testing.media``). numpy only."""

from __future__ import annotations

import numpy as np


def make_picture(height: int, width: int, seed: int = 0):
    """A deterministic RGB picture (uint8 HxWx3) with structure at every scale: gradients, a
    disc, fine noise; so resizing and patching errors show up in the pixels."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack(
        [
            128 + 100 * np.sin(x / (3 + seed % 5)) * np.cos(y / 7),
            255 * x / max(width - 1, 1),
            255 * y / max(height - 1, 1),
        ],
        axis=-1,
    )
    cy, cx, r = rng.integers(0, height), rng.integers(0, width), max(3, min(height, width) // 4)
    img[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.integers(0, 256, 3)
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)
