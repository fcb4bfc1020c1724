"""Generated pictures and videos with structure at every scale, seeded, for tests, the demo and
the benchmarks."""

from __future__ import annotations

from pathlib import Path

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


def make_frames(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """``count`` different pictures as a video: uint8 [count, height, width, 3]."""
    return np.stack([make_picture(height, width, seed + i) for i in range(count)])


def write_video(path: str | Path, frames: np.ndarray, fps: int, codec: str = "mpeg4") -> Path:
    """Encode uint8 [T, H, W, 3] frames into a video file with PyAV (H and W even)."""
    import av

    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
