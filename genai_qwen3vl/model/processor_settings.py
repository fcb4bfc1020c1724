"""The image and video preprocessing settings of a checkpoint, parsed in one place.

The exporter (which writes og's image pipeline from them) and the runtime processor (which
prepares pixels exactly as transformers does) read ``preprocessor_config.json`` and
``video_preprocessor_config.json`` through these functions, so the two can never disagree.

Rules, as transformers applies them to Qwen3-VL:

* image pixel limits come from ``min_pixels``/``max_pixels`` or ``size.shortest_edge``/
  ``size.longest_edge``; the patch, temporal patch and merge sizes must be given. transformers'
  image processor class would fall back to Qwen2-VL's values (56*56 .. 28*28*1280 pixels,
  14-pixel patches), which are wrong for every Qwen3-VL model, so a config without them is
  refused here rather than silently run with them;
* the other image keys (mean, std, rescale factor, the ``do_*`` flags, resample) default to
  transformers' image processor class values;
* every video key defaults to transformers' ``Qwen3VLVideoProcessor`` class values, which are
  Qwen3-VL's own.

Pure Python: no torch, no onnxruntime.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

# transformers' image processor class values (Qwen2VLImageProcessor) for the optional keys
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_FLAGS = dict(rescale_factor=1 / 255, do_rescale=True, do_normalize=True, do_resize=True, do_convert_rgb=True, resample=3)
IMAGE_DEFAULTS: dict[str, Any] = dict(_FLAGS, image_mean=_CLIP_MEAN, image_std=_CLIP_STD)
IMAGE_REQUIRED = ("patch_size", "temporal_patch_size", "merge_size")
# transformers' Qwen3VLVideoProcessor class values
VIDEO_DEFAULTS: dict[str, Any] = dict(
    _FLAGS,
    min_pixels=128 * 32 * 32,
    max_pixels=32 * 32 * 768,
    patch_size=16,
    temporal_patch_size=2,
    merge_size=2,
    image_mean=(0.5, 0.5, 0.5),
    image_std=(0.5, 0.5, 0.5),
)


@dataclasses.dataclass(frozen=True)
class PixelSettings:
    """What one of transformers' processors (image or video) does to pixels."""

    min_pixels: int
    max_pixels: int
    patch_size: int
    temporal_patch_size: int
    merge_size: int
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    rescale_factor: float
    do_rescale: bool
    do_normalize: bool
    do_resize: bool
    do_convert_rgb: bool
    resample: int

    @property
    def factor(self) -> int:
        """Image sides are resized to multiples of this: one merged patch."""
        return self.patch_size * self.merge_size


def _pixel_limits(cfg: dict[str, Any]) -> tuple[Any, Any]:
    size = cfg.get("size") or {}
    # transformers: explicit min_pixels/max_pixels override size.shortest_edge/longest_edge
    low = cfg.get("min_pixels") or size.get("shortest_edge") or size.get("min_pixels")
    high = cfg.get("max_pixels") or size.get("longest_edge") or size.get("max_pixels")
    return low, high


def _settings(cfg: dict[str, Any], defaults: dict[str, Any]) -> PixelSettings:
    def get(key: str):
        value = cfg.get(key)
        return defaults[key] if value is None else value

    low, high = _pixel_limits(cfg)
    settings = PixelSettings(
        min_pixels=int(low if low is not None else defaults["min_pixels"]),
        max_pixels=int(high if high is not None else defaults["max_pixels"]),
        patch_size=int(get("patch_size")),
        temporal_patch_size=int(get("temporal_patch_size")),
        merge_size=int(get("merge_size")),
        image_mean=tuple(float(x) for x in get("image_mean")),
        image_std=tuple(float(x) for x in get("image_std")),
        rescale_factor=float(get("rescale_factor")),
        do_rescale=bool(get("do_rescale")),
        do_normalize=bool(get("do_normalize")),
        do_resize=bool(get("do_resize")),
        do_convert_rgb=bool(get("do_convert_rgb")),
        resample=int(get("resample")),
    )
    if not 0 < settings.min_pixels <= settings.max_pixels:
        raise ValueError(f"gives pixel limits min={settings.min_pixels} max={settings.max_pixels}, which are not 0 < min <= max")
    return settings


def image_settings(cfg: dict[str, Any]) -> PixelSettings:
    """The image processor's settings from ``preprocessor_config.json``; ValueError naming the
    missing keys when the config leaves out what Qwen3-VL needs."""
    low, high = _pixel_limits(cfg)
    missing = [key for key in IMAGE_REQUIRED if cfg.get(key) is None]
    if low is None or high is None:
        missing.insert(0, "pixel limits (size.shortest_edge/longest_edge or min_pixels/max_pixels)")
    if missing:
        raise ValueError(
            f"gives no {', '.join(missing)}; transformers would fall back to Qwen2-VL's values, which do not fit "
            "Qwen3-VL: copy the file from the original checkpoint"
        )
    return _settings(cfg, {**IMAGE_DEFAULTS, "min_pixels": None, "max_pixels": None})


def video_settings(cfg: dict[str, Any]) -> PixelSettings:
    """The video processor's settings from ``video_preprocessor_config.json`` (empty: class values)."""
    return _settings(cfg, VIDEO_DEFAULTS)


@dataclasses.dataclass(frozen=True)
class FrameSampling:
    """transformers' Qwen3-VL video frame sampling settings (``Qwen3VLVideoProcessor``)."""

    fps: float | None = 2.0
    num_frames: int | None = None
    min_frames: int = 4
    max_frames: int = 768
    do_sample_frames: bool = True
    cap_pixels_per_frame: bool = False
    max_video_tokens: int = 768

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> "FrameSampling":
        d = cls()

        def get(key):
            value = cfg.get(key)
            return getattr(d, key) if value is None else value

        return cls(
            fps=None if cfg.get("num_frames") is not None and cfg.get("fps") is None else float(get("fps")),
            num_frames=cfg.get("num_frames"),
            min_frames=int(get("min_frames")),
            max_frames=int(get("max_frames")),
            do_sample_frames=bool(get("do_sample_frames")),
            cap_pixels_per_frame=bool(get("cap_pixels_per_frame")),
            max_video_tokens=int(get("max_video_tokens")),
        )

    def indices(self, total_frames: int, video_fps: float) -> np.ndarray:
        """Which frames transformers keeps (``Qwen3VLVideoProcessor.sample_frames``)."""
        num_frames = self.num_frames
        if num_frames is None and self.fps is not None:
            num_frames = int(total_frames / video_fps * self.fps)
            num_frames = min(max(num_frames, self.min_frames), self.max_frames, total_frames)
        if num_frames is None:
            num_frames = min(max(total_frames, self.min_frames), self.max_frames)
        return np.linspace(0, total_frames - 1, num_frames).round().astype(int)
