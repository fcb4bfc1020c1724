"""Exact transformers preprocessing for the stock og Generator, without torch.

``Qwen3VLProcessor(model_dir)(prompt, images=..., videos=...)`` returns the ``og.NamedTensors``
that og's own multimodal processor would, but computed the way transformers'
``Qwen3VLProcessor`` computes them:

* images: transformers' ``smart_resize`` (Python's round half to even; og's stock processor
  rounds halves away from zero and so gives 1280x720, 848x480, 400x300 another grid), PIL
  bicubic resize, rescale and normalize in the same dtypes, the same patch layout: pixel values
  equal transformers' PIL image backend;
  (or, with ``image_backend="torchvision"``, its default torchvision backend);
* videos (og has no Qwen3-VL video path): transformers' frame sampling (fps, min/max frames),
  its torchvision resize (ported bit for bit in ``resize.py``), its ``<t seconds>`` timestamps
  and one vision group per temporal patch (2 frames). Each group reaches og as a t=1 grid,
  exactly how transformers' vision tower and ``get_rope_index`` see it.

og gets ``input_ids`` (int32), ``pixel_values`` (all images' patches, then all videos'),
``image_grid_thw`` (one row per image, then one t=1 row per video frame group; the vision graph
reads it), ``video_grid_thw`` (the video rows; og's 3D position ids read it) and
``num_image_tokens``. The embedding graph scatters image rows into image pads and the rest into
video pads, as transformers does.

Needs numpy, pillow and ``tokenizers``; PyAV only to decode video files.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

log = logging.getLogger(__name__)

IMAGE_MARKER = "<|vision_start|><|image_pad|><|vision_end|>"
VIDEO_MARKER = "<|vision_start|><|video_pad|><|vision_end|>"
MAX_ASPECT_RATIO = 200
DEFAULT_VIDEO_FPS = 24.0  # what transformers assumes for frames given without a frame rate


# --------------------------------------------------------------------------- resize rules
def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """transformers' image ``smart_resize`` (Qwen2-VL image processor), to the letter."""
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(
            f"absolute aspect ratio must be smaller than {MAX_ASPECT_RATIO}, got {max(height, width) / min(height, width)}"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def video_smart_resize(
    num_frames: int, height: int, width: int, temporal_factor: int, factor: int, min_pixels: int, max_pixels: int
) -> tuple[int, int]:
    """transformers' Qwen3-VL video ``smart_resize`` (pixel budget over all frames)."""
    if num_frames < temporal_factor:
        raise ValueError(f"t:{num_frames} must be larger than temporal_factor:{temporal_factor}")
    if height < factor or width < factor:
        scale = max(factor / height, factor / width)
        height = int(height * scale)
        width = int(width * scale)
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(
            f"absolute aspect ratio must be smaller than {MAX_ASPECT_RATIO}, got {max(height, width) / min(height, width)}"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    t_bar = round(num_frames / temporal_factor) * temporal_factor
    if t_bar * h_bar * w_bar > max_pixels:
        beta = math.sqrt((num_frames * height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif t_bar * h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (num_frames * height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


# --------------------------------------------------------------------------- settings
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
        return self.patch_size * self.merge_size

    @classmethod
    def from_config(cls, cfg: dict[str, Any], defaults: dict[str, Any]) -> "PixelSettings":
        def get(key):
            value = cfg.get(key)
            return defaults[key] if value is None else value

        size = cfg.get("size") or {}
        min_pixels = cfg.get("min_pixels") or size.get("shortest_edge") or defaults["min_pixels"]
        max_pixels = cfg.get("max_pixels") or size.get("longest_edge") or defaults["max_pixels"]
        return cls(
            min_pixels=int(min_pixels),
            max_pixels=int(max_pixels),
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


# transformers' class defaults (Qwen2VLImageProcessor, Qwen3VLVideoProcessor) for keys a config omits
_COMMON_DEFAULTS = dict(
    patch_size=16, temporal_patch_size=2, merge_size=2, rescale_factor=1 / 255, do_rescale=True,
    do_normalize=True, do_resize=True, do_convert_rgb=True, resample=3,
)
IMAGE_DEFAULTS = dict(
    _COMMON_DEFAULTS, min_pixels=56 * 56, max_pixels=28 * 28 * 1280,
    image_mean=(0.48145466, 0.4578275, 0.40821073), image_std=(0.26862954, 0.26130258, 0.27577711),
)
VIDEO_DEFAULTS = dict(
    _COMMON_DEFAULTS, min_pixels=128 * 32 * 32, max_pixels=32 * 32 * 768, image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5),
)


@dataclasses.dataclass(frozen=True)
class FrameSampling:
    """transformers' Qwen3-VL video frame sampling settings."""

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


def frame_timestamps(indices: Sequence[int], video_fps: float, temporal_patch_size: int) -> list[float]:
    """One timestamp per frame group: the mean of its first and last frame's time."""
    indices = list(int(i) for i in indices)
    if len(indices) % temporal_patch_size:
        indices.extend(indices[-1] for _ in range(temporal_patch_size - len(indices) % temporal_patch_size))
    times = [i / video_fps for i in indices]
    return [(times[i] + times[i + temporal_patch_size - 1]) / 2 for i in range(0, len(times), temporal_patch_size)]


# --------------------------------------------------------------------------- pixels
def load_image(image) -> "np.ndarray":
    """A path, PIL image or HxW(xC) uint8 array -> HxWx3 uint8 RGB, as transformers converts it
    (transparency composited onto white)."""
    from PIL import Image

    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise ValueError(f"image file {path} does not exist")
        try:
            with warnings.catch_warnings():
                # past PIL's pixel limit an image is treated as a decompression bomb, not decoded
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as opened:
                    opened.load()
                    image = opened.copy()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ValueError(f"image file {path} is too large to decode safely ({exc})") from None
        except Exception as exc:  # PIL raises several types for unreadable files
            raise ValueError(f"image file {path} cannot be decoded ({type(exc).__name__}: {exc})") from None
    if isinstance(image, Image.Image):
        has_alpha = "A" in image.getbands() or image.info.get("transparency") is not None
        if has_alpha:
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return np.array(Image.alpha_composite(background, rgba).convert("RGB"))
        return np.array(image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"image arrays must be uint8 HxWx3, got dtype {array.dtype}")
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(f"image arrays must be HxW, HxWx3 or HxWx4 uint8, got shape {array.shape}")
    if array.shape[-1] == 1:
        return np.repeat(array, 3, axis=-1)
    if array.shape[-1] == 4:
        alpha = array[..., 3:4] / 255
        return np.round(alpha * array[..., :3] + (1 - alpha) * 255).astype(np.uint8)
    return array


# transformers' two image backends; videos only have the torchvision one
BACKENDS = ("pil", "torchvision")
_TORCH_MODES = {3: "bicubic", 2: "bilinear"}  # PIL resample code -> torchvision interpolation


def resize_frames(frames: np.ndarray, height: int, width: int, resample: int, backend: str) -> np.ndarray:
    """[T, H, W, 3] uint8 -> [T, height, width, 3] uint8 as transformers' backend resizes:
    PIL's filter, or torchvision's antialiased uint8 kernel (bit-exact numpy port)."""
    if backend == "torchvision":
        if resample not in _TORCH_MODES:
            raise ValueError(f"resample={resample} has no exact torchvision port here; use bicubic (3) or bilinear (2)")
        from .resize import torch_like_resize

        return torch_like_resize(frames, height, width, mode=_TORCH_MODES[resample])
    from PIL import Image

    return np.stack([np.array(Image.fromarray(f).resize((width, height), resample=resample)) for f in frames])


def _rescale_normalize(chw_uint8: np.ndarray, s: PixelSettings, backend: str) -> np.ndarray:
    """[..., C, H, W] uint8 -> float32, in the dtypes and order of the backend: PIL rescales in
    float64 then normalizes in float32; torchvision fuses both into float32 mean*255, std*255."""
    if backend == "torchvision":
        image = chw_uint8.astype(np.float32)
        if s.do_rescale and s.do_normalize:
            scale = np.float32(1.0 / s.rescale_factor)
            mean = np.asarray(s.image_mean, dtype=np.float32) * scale
            std = np.asarray(s.image_std, dtype=np.float32) * scale
            return (image - mean[:, None, None]) / std[:, None, None]
        if s.do_normalize:
            mean = np.asarray(s.image_mean, dtype=np.float32)
            std = np.asarray(s.image_std, dtype=np.float32)
            return (image - mean[:, None, None]) / std[:, None, None]
        return image * np.float32(s.rescale_factor) if s.do_rescale else image
    image = chw_uint8
    if s.do_rescale:
        image = (image.astype(np.float64) * s.rescale_factor).astype(np.float32)
    if s.do_normalize:
        if not np.issubdtype(image.dtype, np.floating):
            image = image.astype(np.float32)
        mean = np.array(s.image_mean, dtype=image.dtype)
        std = np.array(s.image_std, dtype=image.dtype)
        image = ((image.T - mean) / std).T
    return np.asarray(image, dtype=np.float32)


def _patchify(frames: np.ndarray, s: PixelSettings) -> tuple[np.ndarray, int, int, int]:
    """[T, C, H, W] float32 (T a multiple of temporal_patch_size) -> [T/tp*gh*gw, C*tp*P*P] in the
    processor's merge-block order."""
    t, c, h, w = frames.shape
    p, m, tp = s.patch_size, s.merge_size, s.temporal_patch_size
    gt, gh, gw = t // tp, h // p, w // p
    patches = frames.reshape(gt, tp, c, gh // m, m, p, gw // m, m, p)
    patches = patches.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return patches.reshape(gt * gh * gw, c * tp * p * p), gt, gh, gw


def preprocess_image(image, s: PixelSettings, backend: str = "pil") -> tuple[np.ndarray, tuple[int, int, int]]:
    """One image -> (pixel rows, grid (1, gh, gw)), equal to transformers' image processor with
    the given backend."""
    rgb = load_image(image)
    height, width = rgb.shape[:2]
    if height == 0 or width == 0:
        raise ValueError(f"image has zero size ({width}x{height})")
    if s.do_resize:
        new_h, new_w = smart_resize(height, width, s.factor, s.min_pixels, s.max_pixels)
        rgb = resize_frames(rgb[None], new_h, new_w, s.resample, backend)[0]
    chw = _rescale_normalize(np.moveaxis(rgb, -1, 0), s, backend)
    frames = np.broadcast_to(chw[None], (s.temporal_patch_size, *chw.shape))
    patches, gt, gh, gw = _patchify(np.ascontiguousarray(frames), s)
    return patches, (gt, gh, gw)


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
    except Exception as exc:  # PyAV's errors (some subclass ValueError) for unreadable files
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
        except Exception as exc:
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
        new_h, new_w = video_smart_resize(t, height, width, s.temporal_patch_size, s.factor, s.min_pixels, max_pixels)
        frames = resize_frames(frames, new_h, new_w, s.resample, "torchvision")
    chw = _rescale_normalize(np.moveaxis(frames, -1, 1), s, "torchvision")
    if pad := -len(chw) % s.temporal_patch_size:
        chw = np.concatenate([chw, np.repeat(chw[-1:], pad, axis=0)])
    patches, gt, gh, gw = _patchify(chw, s)
    return patches, (gt, gh, gw)


# --------------------------------------------------------------------------- the processor
@dataclasses.dataclass
class ProcessorOutput:
    """Everything the processor computed, as numpy arrays; ``to_named_tensors`` converts for og."""

    text: str  # the expanded prompt
    input_ids: np.ndarray  # [1, S] int64
    pixel_values: np.ndarray | None  # images' rows, then videos' rows
    image_grid_thw: np.ndarray | None  # [images, 3]
    video_grid_thw: np.ndarray | None  # [videos, 3] (t = frame groups), as transformers reports it
    merge_size: int
    timestamps: list[list[float]] = dataclasses.field(default_factory=list)  # per video, per frame group

    def og_video_grid(self) -> np.ndarray | None:
        """One t=1 row per video frame group (how transformers' get_rope_index splits them)."""
        if self.video_grid_thw is None:
            return None
        split = np.repeat(self.video_grid_thw, self.video_grid_thw[:, 0], axis=0)
        split[:, 0] = 1
        return split.astype(np.int64)

    def og_grid(self) -> np.ndarray | None:
        """The grid og's vision graph gets: image rows, then the video frame-group rows."""
        parts = [g for g in (self.image_grid_thw, self.og_video_grid()) if g is not None]
        return np.concatenate(parts).astype(np.int64) if parts else None

    @property
    def num_visual_tokens(self) -> int:
        grid = self.og_grid()
        return 0 if grid is None else int(grid.prod(-1).sum()) // self.merge_size**2

    def to_named_tensors(self):
        """The og inputs (see the module docstring)."""
        import onnxruntime_genai as og

        tensors = og.NamedTensors()
        tensors["input_ids"] = np.ascontiguousarray(self.input_ids, dtype=np.int32)
        grid = self.og_grid()
        if grid is not None:
            tensors["pixel_values"] = np.ascontiguousarray(self.pixel_values, dtype=np.float32)
            tensors["image_grid_thw"] = np.ascontiguousarray(grid, dtype=np.int64)
        if self.video_grid_thw is not None:
            tensors["video_grid_thw"] = np.ascontiguousarray(self.og_video_grid(), dtype=np.int64)
        tensors["num_image_tokens"] = np.asarray([self.num_visual_tokens], dtype=np.int64)
        return tensors


class Qwen3VLProcessor:
    """Preprocessing equal to transformers' for an exported folder; returns ``og.NamedTensors``.

    >>> processor = Qwen3VLProcessor("qwen3vl-out")
    >>> inputs = processor(prompt, images=["cat.jpg"])
    >>> generator.set_inputs(inputs)
    """

    def __init__(self, model_dir: str | Path, image_backend: str = "pil"):
        """``image_backend``: which of transformers' image processor backends to reproduce:
        ``"pil"`` (its PIL backend, which og's stock processor also follows) or
        ``"torchvision"`` (what ``AutoProcessor`` loads by default). They differ by a few uint8
        steps after resizing. Videos always follow transformers' video processor (torchvision)."""
        if image_backend not in BACKENDS:
            raise ValueError(f"image_backend must be one of {BACKENDS}, got {image_backend!r}")
        self.image_backend = image_backend
        self.model_dir = Path(model_dir)
        genai = _read(self.model_dir / "genai_config.json")
        model = genai["model"]
        self.image_token_id = int(model["image_token_id"])
        self.video_token_id = int(model["video_token_id"])
        self.merge_size = int(model["vision"]["spatial_merge_size"])
        self.context_length = int(model.get("context_length", 0)) or None
        image_cfg = _read(self.model_dir / "preprocessor_config.json")
        video_path = self.model_dir / "video_preprocessor_config.json"
        video_cfg = _read(video_path) if video_path.is_file() else {}
        self.image_settings = PixelSettings.from_config(image_cfg, IMAGE_DEFAULTS)
        self.video_settings = PixelSettings.from_config(video_cfg, VIDEO_DEFAULTS)
        self.sampling = FrameSampling.from_config(video_cfg)
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        self.chat_template = _chat_template(self.model_dir)

    # ------------------------------------------------------------------ public
    def __call__(self, prompt: str, images=None, videos=None, video_fps=None):
        return self.process(prompt, images=images, videos=videos, video_fps=video_fps).to_named_tensors()

    def process(self, prompt: str, images=None, videos=None, video_fps=None) -> ProcessorOutput:
        images = list(images) if images is not None else []
        videos = list(videos) if videos is not None else []
        n_image_markers = prompt.count("<|image_pad|>")
        n_video_markers = prompt.count("<|video_pad|>")
        if n_image_markers != len(images):
            raise ValueError(f"the prompt has {n_image_markers} image markers ({IMAGE_MARKER}) but {len(images)} images were given")
        if n_video_markers != len(videos):
            raise ValueError(f"the prompt has {n_video_markers} video markers ({VIDEO_MARKER}) but {len(videos)} videos were given")
        fps_list = _per_video(video_fps, len(videos))

        image_rows, image_grids = [], []
        for i, image in enumerate(images):
            try:
                rows, grid = preprocess_image(image, self.image_settings, self.image_backend)
            except ValueError as exc:
                raise ValueError(f"image {i}: {exc}") from None
            image_rows.append(rows)
            image_grids.append(grid)
        video_rows, video_grids, stamps = [], [], []
        for i, (video, fps) in enumerate(zip(videos, fps_list)):
            try:
                decoded = (
                    decode_video_file(video, self.sampling)
                    if isinstance(video, (str, Path))
                    else video_from_frames(video, fps, self.sampling)
                )
                rows, grid = preprocess_video(decoded, self.video_settings, self.sampling)
            except ValueError as exc:
                raise ValueError(f"video {i}: {exc}") from None
            video_rows.append(rows)
            video_grids.append(grid)
            stamps.append(frame_timestamps(decoded.indices, decoded.fps, self.video_settings.temporal_patch_size))

        text = self._expand(prompt, image_grids, video_grids, stamps)
        ids = np.asarray([self.tokenizer.encode(text, add_special_tokens=True).ids], dtype=np.int64)
        if self.context_length and ids.shape[1] > self.context_length:
            raise ValueError(f"the prompt is {ids.shape[1]} tokens, longer than the model's context of {self.context_length}")
        rows = image_rows + video_rows
        return ProcessorOutput(
            text=text,
            input_ids=ids,
            pixel_values=np.concatenate(rows).astype(np.float32) if rows else None,
            image_grid_thw=np.asarray(image_grids, dtype=np.int64) if image_grids else None,
            video_grid_thw=np.asarray(video_grids, dtype=np.int64) if video_grids else None,
            merge_size=self.merge_size,
            timestamps=stamps,
        )

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True, **kwargs) -> str:
        """Render transformers-style messages (content items of type text/image/video) with the
        checkpoint's chat template, as ``processor.apply_chat_template(..., tokenize=False)`` does."""
        if not self.chat_template:
            raise ValueError(f"{self.model_dir} has no chat template (chat_template.json/.jinja or tokenizer_config.json)")
        import datetime

        import jinja2
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        # the environment transformers renders chat templates in
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
        env.filters["tojson"] = lambda x, indent=None, separators=None, sort_keys=False: json.dumps(
            x, ensure_ascii=False, indent=indent, separators=separators, sort_keys=sort_keys
        )

        def raise_exception(message):
            raise jinja2.exceptions.TemplateError(message)

        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
        return env.from_string(self.chat_template).render(
            messages=messages, add_generation_prompt=add_generation_prompt, **kwargs
        )

    # ------------------------------------------------------------------ internals
    def _expand(self, prompt: str, image_grids, video_grids, stamps) -> str:
        """Replace each pad marker with its tokens, as transformers 5 does: an image pad becomes
        one pad per merged patch; a video pad becomes, per frame group,
        ``<t seconds><|vision_start|>`` + pads + ``<|vision_end|>``."""
        merge = self.merge_size**2
        images, videos = iter(image_grids), iter(zip(video_grids, stamps))
        out, i = [], 0
        while True:
            next_image = prompt.find("<|image_pad|>", i)
            next_video = prompt.find("<|video_pad|>", i)
            if next_image < 0 and next_video < 0:
                out.append(prompt[i:])
                break
            if next_video < 0 or (0 <= next_image < next_video):
                t, h, w = next(images)
                out.append(prompt[i:next_image] + "<|image_pad|>" * (t * h * w // merge))
                i = next_image + len("<|image_pad|>")
            else:
                (t, h, w), times = next(videos)
                groups = "".join(
                    f"<{times[g]:.1f} seconds><|vision_start|>" + "<|video_pad|>" * (h * w // merge) + "<|vision_end|>"
                    for g in range(t)
                )
                out.append(prompt[i:next_video] + groups)
                i = next_video + len("<|video_pad|>")
        return "".join(out)


def _per_video(value, count: int) -> list:
    if value is None or isinstance(value, (int, float)):
        return [value] * count
    values = list(value)
    if len(values) != count:
        raise ValueError(f"video_fps has {len(values)} entries for {count} videos")
    return values


def _read(path: Path) -> dict:
    if not path.is_file():
        raise ValueError(f"{path} is missing: point Qwen3VLProcessor at a folder written by builder_qwen3vl.py")
    return json.loads(path.read_text(encoding="utf-8"))


def _chat_template(folder: Path) -> str | None:
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text(encoding="utf-8")
    for name in ("chat_template.json", "tokenizer_config.json"):
        if (folder / name).is_file():
            template = json.loads((folder / name).read_text(encoding="utf-8")).get("chat_template")
            if template:
                return template
    return None
