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

from ..errors import VideoError
from ..model.processor_settings import FrameSampling, PixelSettings
from . import budget
from .images import MISSING_FIX, load_image, patchify, rescale_normalize, resize_frames, smart_resize

log = logging.getLogger(__name__)

DEFAULT_VIDEO_FPS = 24.0  # what transformers assumes for frames given without a frame rate
# the fix the messages name for a video file FFmpeg cannot read, or reads other than its header says
REENCODE_FIX = "re-encode it, e.g. ffmpeg -i IN -c:v libx264 OUT.mp4"


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
    resized: bool = False  # the frames are already at preprocess_video's size (resized as decoded)


def video_target_size(t: int, height: int, width: int, s: PixelSettings, sampling: FrameSampling) -> tuple[int, int]:
    """The frame size transformers' video processor resizes ``t`` sampled HxW frames to."""
    if not s.do_resize:
        return height, width
    max_pixels = s.max_pixels
    if sampling.cap_pixels_per_frame:
        frame_cap = sampling.max_video_tokens * s.factor * s.factor
        per_frame = max(min(frame_cap, s.max_pixels // t), int(s.min_pixels * 1.05))
        max_pixels = per_frame * t
    return smart_resize(height, width, s.factor, s.min_pixels, max_pixels, frames=t, temporal_factor=s.temporal_patch_size)


def decode_video_file(path: str | Path, sampling: FrameSampling, settings: PixelSettings | None = None) -> Video:
    """Decode a video file with PyAV the way transformers' PyAV loader does: frame count and
    rate from the stream header, sampled frames kept in decode order. Only the sampled frames
    are kept; with ``settings`` each is resized as it is decoded (the same per-frame resize
    preprocess_video would do), so memory holds one source frame plus the resized video.
    Checks the preparation budget (budget.py) at every frame."""
    try:
        import av
    except ImportError:
        raise VideoError("decoding video files needs PyAV: pip install av") from None
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"video file {path} does not exist; {MISSING_FIX}")
    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:  # what FFmpeg reports for a file it cannot read
        raise VideoError(f"video file {path} cannot be decoded ({exc}); {REENCODE_FIX}") from None
    with container:
        if not container.streams.video:
            raise VideoError(f"video file {path} has no video stream; give a file with a video track")
        stream = container.streams.video[0]
        total = int(stream.frames)
        fps = float(stream.average_rate) if stream.average_rate else None
        if total <= 0 or not fps:
            raise VideoError(f"video file {path} does not state its frame count and frame rate; {REENCODE_FIX}")
        indices = sampling.indices(total, fps) if sampling.do_sample_frames else np.arange(total)
        frames, kept = None, 0  # the sampled frames only, allocated at the first one's size, filled as decoded
        try:
            for i, frame in enumerate(container.decode(video=0)):
                budget.check()
                if i > indices[-1]:
                    break
                if i != indices[kept]:
                    continue
                rgb = frame.to_ndarray(format="rgb24")
                if frames is None:
                    source = rgb.shape
                    size = rgb.shape[:2] if settings is None else video_target_size(len(indices), *rgb.shape[:2], settings, sampling)
                    frames = np.empty((len(indices), *size, 3), dtype=np.uint8)
                if rgb.shape != source:
                    raise VideoError(f"video file {path} changes its frame size mid-stream; {REENCODE_FIX}")
                if settings is not None and settings.do_resize:
                    rgb = resize_frames(rgb[None], *size, settings.resample, "torchvision")[0]
                while kept < len(indices) and indices[kept] == i:
                    frames[kept] = rgb
                    kept += 1
        except av.FFmpegError as exc:
            raise VideoError(f"video file {path} cannot be decoded ({exc}); {REENCODE_FIX}") from None
    if kept != len(indices):
        raise VideoError(f"video file {path} has fewer decodable frames than its header states; {REENCODE_FIX}")
    return Video(frames=frames, indices=indices, fps=fps, resized=settings is not None and settings.do_resize)


def video_decode_pixels(path: str | Path, sampling: FrameSampling, settings: PixelSettings) -> int:
    """Pixels ``decode_video_file(path, sampling, settings)`` holds at its peak, from the stream
    header alone: the sampled frames at their resized size, plus one source frame. 0 when the
    header does not say (decoding then refuses the file)."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return 0
            stream = container.streams.video[0]
            total, rate = int(stream.frames), stream.average_rate
            height, width = int(stream.codec_context.height), int(stream.codec_context.width)
    except av.FFmpegError:
        return 0
    if total <= 0 or not rate or height <= 0 or width <= 0:
        return 0
    count = len(sampling.indices(total, float(rate)) if sampling.do_sample_frames else range(total))
    try:
        new_h, new_w = video_target_size(count, height, width, settings, sampling)
    except VideoError:  # an aspect ratio the processor refuses: decoding says so
        return 0
    return count * new_h * new_w + height * width


def video_from_frames(frames, fps: float | None, sampling: FrameSampling) -> Video:
    if isinstance(frames, np.ndarray):
        if frames.ndim != 4 or frames.shape[-1] not in (1, 3, 4):
            raise VideoError(f"video frame arrays must be TxHxWx3 uint8, got shape {frames.shape}")
        rgb = [load_image(f) for f in frames]
    else:
        rgb = [load_image(f) for f in frames]
    if not rgb:
        raise VideoError("a video has no frames; give one frame or more")
    if len({f.shape for f in rgb}) != 1:
        raise VideoError("all frames of a video must have the same size; resize them to one size")
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
    if s.do_resize and not video.resized:
        new_h, new_w = video_target_size(t, height, width, s, sampling)
        frames = resize_frames(frames, new_h, new_w, s.resample, "torchvision")
    chw = rescale_normalize(np.moveaxis(frames, -1, 1), s, "torchvision")
    if pad := -len(chw) % s.temporal_patch_size:
        chw = np.concatenate([chw, np.repeat(chw[-1:], pad, axis=0)])
    patches, gt, gh, gw = patchify(chw, s)
    return patches, (gt, gh, gw)
