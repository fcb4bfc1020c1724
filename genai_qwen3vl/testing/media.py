"""Generated pictures and videos with structure at every scale, seeded, for tests, the demo and
the benchmarks. The picture maker is ``verify.pictures``' (``--validate`` uses it too)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..verify.pictures import make_picture

__all__ = ["make_frames", "make_picture", "write_video"]


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
