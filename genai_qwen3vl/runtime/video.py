"""Videos as transformers' Qwen3-VL video processor prepares them: frame sampling (its fps,
min/max frames), its torchvision resize (ported bit for bit in ``resize.py``), its
``<t seconds>`` timestamps, one vision group per temporal patch (2 frames). PyAV decodes files.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from ..model.processor_settings import FrameSampling, PixelSettings
from .images import load_image, patchify, rescale_normalize, resize_frames, smart_resize

log = logging.getLogger(__name__)

DEFAULT_VIDEO_FPS = 24.0  # what transformers assumes for frames given without a frame rate


def frame_timestamps(indices: Sequence[int], video_fps: float, temporal_patch_size: int) -> list[float]:
    """One timestamp per frame group: the mean of its first and last frame's time."""
    indices = list(int(i) for i in indices)
    if len(indices) % temporal_patch_size:
        indices.extend(indices[-1] for _ in range(temporal_patch_size - len(indices) % temporal_patch_size))
    times = [i / video_fps for i in indices]
    return [(times[i] + times[i + temporal_patch_size - 1]) / 2 for i in range(0, len(times), temporal_patch_size)]



@dataclasses.dataclass
class Video:
    """Decoded frames (sampled) and what transformers' timestamps need."""

    frames: np.ndarray  # [T, H, W, 3] uint8, the sampled frames
    indices: np.ndarray  # their frame numbers in the source
    fps: float


def decode_video_file(path: str | Path, sampling: FrameSampling) -> Video:
    """Decode a video file with PyAV the way transformers' PyAV loader does: frame count and
    rate from the stream header, sampled frames kept in decode order."""
    try:
        import av
    except ImportError:
        raise ValueError("decoding video files needs PyAV: pip install av") from None
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"video file {path} does not exist")
    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:  # what FFmpeg reports for a file it cannot read
        raise ValueError(f"video file {path} cannot be decoded ({exc})") from None
    with container:
        if not container.streams.video:
            raise ValueError(f"video file {path} has no video stream")
        stream = container.streams.video[0]
        total = int(stream.frames)
        fps = float(stream.average_rate) if stream.average_rate else None
        if total <= 0 or not fps:
            raise ValueError(f"video file {path} does not state its frame count and frame rate")
        indices = sampling.indices(total, fps) if sampling.do_sample_frames else np.arange(total)
        wanted = set(int(i) for i in indices)
        frames = []
        try:
            for i, frame in enumerate(container.decode(video=0)):
                if i > indices[-1]:
                    break
                if i in wanted:
                    frames.append(frame.to_ndarray(format="rgb24"))
        except av.FFmpegError as exc:
            raise ValueError(f"video file {path} cannot be decoded ({exc})") from None
    if len(frames) != len(indices):
        raise ValueError(f"video file {path} has fewer decodable frames than its header states")
    return Video(frames=np.stack(frames), indices=indices, fps=fps)


def video_from_frames(frames, fps: float | None, sampling: FrameSampling) -> Video:
    if isinstance(frames, np.ndarray):
        if frames.ndim != 4 or frames.shape[-1] not in (1, 3, 4):
            raise ValueError(f"video frame arrays must be TxHxWx3 uint8, got shape {frames.shape}")
        rgb = [load_image(f) for f in frames]
    else:
        rgb = [load_image(f) for f in frames]
    if not rgb:
        raise ValueError("a video has no frames")
    if len({f.shape for f in rgb}) != 1:
        raise ValueError("all frames of a video must have the same size")
    if fps is None:
        log.warning("no frame rate given for a frame sequence; assuming %g fps as transformers does", DEFAULT_VIDEO_FPS)
        fps = DEFAULT_VIDEO_FPS
    total = len(rgb)
    indices = sampling.indices(total, fps) if sampling.do_sample_frames else np.arange(total)
    return Video(frames=np.stack([rgb[i] for i in indices]), indices=indices, fps=float(fps))


def preprocess_video(video: Video, s: PixelSettings, sampling: FrameSampling) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Sampled frames -> (pixel rows, grid (T/2, gh, gw)), equal to transformers' video
    processor (torchvision backend, its resize reproduced bit for bit)."""
    frames = video.frames
    t, height, width = frames.shape[:3]
    if s.do_resize:
        max_pixels = s.max_pixels
        if sampling.cap_pixels_per_frame:
            frame_cap = sampling.max_video_tokens * s.factor * s.factor
            per_frame = max(min(frame_cap, s.max_pixels // t), int(s.min_pixels * 1.05))
            max_pixels = per_frame * t
        new_h, new_w = smart_resize(height, width, s.factor, s.min_pixels, max_pixels, frames=t, temporal_factor=s.temporal_patch_size)
        frames = resize_frames(frames, new_h, new_w, s.resample, "torchvision")
    chw = rescale_normalize(np.moveaxis(frames, -1, 1), s, "torchvision")
    if pad := -len(chw) % s.temporal_patch_size:
        chw = np.concatenate([chw, np.repeat(chw[-1:], pad, axis=0)])
    patches, gt, gh, gw = patchify(chw, s)
    return patches, (gt, gh, gw)


