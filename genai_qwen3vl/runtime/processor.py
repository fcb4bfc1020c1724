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

Needs numpy, pillow, ``tokenizers`` and jinja2; PyAV only to decode video files. No torch.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np

from ..errors import FolderError, ImageError, InputError, PromptError, VideoError
from ..model.folder import ExportedFolder
from ..model.processor_settings import FrameSampling, image_settings, video_settings
from .chat_template import find_chat_template, render_chat_template
from .images import BACKENDS, MAX_DECODE_PIXELS, preprocess_image
from .video import decode_video_file, frame_timestamps, preprocess_video, video_from_frames


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

    def og_arrays(self) -> dict[str, np.ndarray]:
        """The og inputs as numpy arrays (see the module docstring); picklable, unlike og's tensors."""
        arrays = {"input_ids": np.ascontiguousarray(self.input_ids, dtype=np.int32)}
        grid = self.og_grid()
        if grid is not None:
            arrays["pixel_values"] = np.ascontiguousarray(self.pixel_values, dtype=np.float32)
            arrays["image_grid_thw"] = np.ascontiguousarray(grid, dtype=np.int64)
        if self.video_grid_thw is not None:
            arrays["video_grid_thw"] = np.ascontiguousarray(self.og_video_grid(), dtype=np.int64)
        arrays["num_image_tokens"] = np.asarray([self.num_visual_tokens], dtype=np.int64)
        return arrays

    def to_named_tensors(self):
        """The og inputs (see the module docstring)."""
        return named_tensors(self.og_arrays())


def named_tensors(arrays: dict[str, np.ndarray]):
    """``og.NamedTensors`` holding ``arrays``."""
    import onnxruntime_genai as og

    tensors = og.NamedTensors()
    for name, array in arrays.items():
        tensors[name] = array
    return tensors


class Qwen3VLProcessor:
    """Preprocessing equal to transformers' for an exported folder; returns ``og.NamedTensors``.

    >>> processor = Qwen3VLProcessor("qwen3vl-out")
    >>> inputs = processor(prompt, images=["cat.jpg"])
    >>> generator.set_inputs(inputs)
    """

    def __init__(self, model_dir: str | Path | ExportedFolder, image_backend: str = "pil", max_decode_pixels: int = MAX_DECODE_PIXELS):
        """``model_dir``: the exported folder (or its ``ExportedFolder``, already open).
        ``image_backend``: which of transformers' image processor backends to reproduce:
        ``"pil"`` (its PIL backend, which og's stock processor also follows) or
        ``"torchvision"`` (what ``AutoProcessor`` loads by default). They differ by a few uint8
        steps after resizing. Videos always follow transformers' video processor (torchvision).
        ``max_decode_pixels``: image files with more pixels are refused from their header."""
        if image_backend not in BACKENDS:
            raise InputError(f"image_backend must be one of {BACKENDS}, got {image_backend!r}")
        self.image_backend = image_backend
        self.max_decode_pixels = max_decode_pixels
        self.folder = model_dir if isinstance(model_dir, ExportedFolder) else ExportedFolder.open(model_dir)
        self.model_dir = self.folder.path
        self.arch = self.folder.architecture
        self.image_token_id = self.folder.image_token_id
        self.video_token_id = self.folder.video_token_id
        self.merge_size = self.folder.spatial_merge_size
        self.context_length = self.folder.context_length
        image_path = self.model_dir / "preprocessor_config.json"
        video_path = self.model_dir / "video_preprocessor_config.json"
        video_cfg = _read(video_path) if video_path.is_file() else {}
        try:
            self.image_settings = image_settings(_read(image_path))
        except FolderError:
            raise
        except ValueError as exc:
            raise FolderError(f"{image_path} {exc}") from None
        try:
            self.video_settings = video_settings(video_cfg)
        except ValueError as exc:
            raise FolderError(f"{video_path} {exc}") from None
        self.sampling = FrameSampling.from_config(video_cfg)
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        # the marker tokens as this tokenizer spells them (ids from genai_config.json)
        self.image_pad = self._token(self.image_token_id, "image_token_id")
        self.video_pad = self._token(self.video_token_id, "video_token_id")
        self.image_marker = self.arch.vision_start_token + self.image_pad + self.arch.vision_end_token
        self.video_marker = self.arch.vision_start_token + self.video_pad + self.arch.vision_end_token
        self.chat_template = find_chat_template(self.model_dir)

    # ------------------------------------------------------------------ public
    def __call__(self, prompt: str, images=None, videos=None, video_fps=None):
        return self.process(prompt, images=images, videos=videos, video_fps=video_fps).to_named_tensors()

    def process(self, prompt: str, images=None, videos=None, video_fps=None) -> ProcessorOutput:
        images = list(images) if images is not None else []
        videos = list(videos) if videos is not None else []
        n_image_markers = prompt.count(self.image_pad)
        n_video_markers = prompt.count(self.video_pad)
        if n_image_markers != len(images):
            raise PromptError(
                f"the prompt has {n_image_markers} image markers ({self.image_marker}) but {len(images)} images were given; "
                "give one image per marker"
            )
        if n_video_markers != len(videos):
            raise PromptError(
                f"the prompt has {n_video_markers} video markers ({self.video_marker}) but {len(videos)} videos were given; "
                "give one video per marker"
            )
        fps_list = _per_video(video_fps, len(videos))

        image_rows, image_grids = [], []
        for i, image in enumerate(images):
            try:
                rows, grid = preprocess_image(image, self.image_settings, self.image_backend, self.max_decode_pixels)
            except ValueError as exc:
                raise _which(exc, f"image {i}", ImageError) from None
            image_rows.append(rows)
            image_grids.append(grid)
        video_rows, video_grids, stamps = [], [], []
        for i, (video, fps) in enumerate(zip(videos, fps_list, strict=True)):
            try:
                decoded = (
                    decode_video_file(video, self.sampling, self.video_settings)
                    if isinstance(video, (str, Path))
                    else video_from_frames(video, fps, self.sampling)
                )
                rows, grid = preprocess_video(decoded, self.video_settings, self.sampling)
            except ValueError as exc:
                raise _which(exc, f"video {i}", VideoError) from None
            video_rows.append(rows)
            video_grids.append(grid)
            stamps.append(frame_timestamps(decoded.indices, decoded.fps, self.video_settings.temporal_patch_size))

        text = self._expand(prompt, image_grids, video_grids, stamps)
        ids = np.asarray([self.tokenizer.encode(text, add_special_tokens=True).ids], dtype=np.int64)
        if self.context_length and ids.shape[1] > self.context_length:
            raise PromptError(
                f"the prompt is {ids.shape[1]} tokens, longer than the model's context of {self.context_length}; "
                "shorten it, or give fewer or smaller images or shorter videos"
            )
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
            raise FolderError(
                f"{self.model_dir} has no chat template (chat_template.json/.jinja or tokenizer_config.json); "
                "copy the checkpoint's chat_template.jinja into it, or give process() a prompt of your own"
            )
        return render_chat_template(self.chat_template, messages, add_generation_prompt, **kwargs)

    def with_options(self, min_pixels: int | None = None, max_pixels: int | None = None, fps: float | None = None):
        """A copy with other image pixel limits or another video sampling rate (what vLLM's
        ``mm_processor_kwargs`` set per request); the caller checks the values."""
        other = copy.copy(self)
        if min_pixels is not None or max_pixels is not None:
            other.image_settings = dataclasses.replace(
                self.image_settings,
                min_pixels=self.image_settings.min_pixels if min_pixels is None else int(min_pixels),
                max_pixels=self.image_settings.max_pixels if max_pixels is None else int(max_pixels),
            )
        if fps is not None:
            other.sampling = dataclasses.replace(self.sampling, fps=float(fps))
        return other

    # ------------------------------------------------------------------ internals
    def _token(self, token_id: int, key: str) -> str:
        token = self.tokenizer.id_to_token(token_id)
        if token is None:
            raise FolderError(
                f"{self.folder.genai_config_path} names {key} {token_id}, which tokenizer.json does not have; "
                "export the folder again with builder_qwen3vl.py"
            )
        return token

    def _expand(self, prompt: str, image_grids, video_grids, stamps) -> str:
        """Replace each pad marker with its tokens in Qwen3-VL's released format (its processor in
        transformers 4.57.1, and 5.25 again): an image pad becomes one pad per merged patch; a
        video becomes, per frame group, ``<t seconds><|vision_start|>`` + pads + ``<|vision_end|>``,
        and that replaces the chat template's whole ``<|vision_start|><|video_pad|><|vision_end|>``
        (no outer pair around the frames: transformers 5.24 kept one, a regression) or, where the
        prompt has a bare ``<|video_pad|>`` (vLLM's form), that pad alone. Videos take their
        places in prompt order, as 5.25 gives them; 4.57.1 agrees except in a prompt with a bare
        pad before a wrapped one, where it gave the first video to the first wrapped marker (a
        prompt no chat template writes). See ``video_prompt``."""
        merge = self.merge_size**2
        start, end = self.arch.vision_start_token, self.arch.vision_end_token
        if video_grids:  # as released: every wrapper collapses to a bare pad, then pads expand in order
            prompt = prompt.replace(self.video_marker, self.video_pad)
        images, videos = iter(image_grids), iter(zip(video_grids, stamps, strict=True))
        out, i = [], 0
        while True:
            next_image = prompt.find(self.image_pad, i)
            next_video = prompt.find(self.video_pad, i)
            if next_image < 0 and next_video < 0:
                out.append(prompt[i:])
                break
            if next_video < 0 or (0 <= next_image < next_video):
                t, h, w = next(images)
                out.append(prompt[i:next_image] + self.image_pad * (t * h * w // merge))
                i = next_image + len(self.image_pad)
            else:
                grid, times = next(videos)
                out.append(prompt[i:next_video] + video_prompt(grid, times, merge, self.video_pad, start, end))
                i = next_video + len(self.video_pad)
        return "".join(out)


def video_prompt(grid, times, merge: int, pad: str, start: str, end: str) -> str:
    """One video's tokens in Qwen3-VL's released format: per frame group (``grid`` t, h, w),
    ``<t seconds>`` (one decimal) + ``start`` + one ``pad`` per merged patch + ``end``."""
    t, h, w = (int(x) for x in grid)
    return "".join(f"<{times[g]:.1f} seconds>{start}" + pad * (h * w // merge) + end for g in range(t))


def _which(exc: ValueError, where: str, kind: type[InputError]) -> InputError:
    """``exc``'s message led by ``where`` (which image or video of the call), as its own class
    when that is already a ``kind`` (an ImageTooLarge stays one), else as a ``kind``."""
    return (type(exc) if isinstance(exc, kind) else kind)(f"{where}: {exc}")


def _per_video(value, count: int) -> list:
    if value is None or isinstance(value, (int, float)):
        return [value] * count
    values = list(value)
    if len(values) != count:
        raise VideoError(f"video_fps has {len(values)} entries for {count} videos; give one per video, or one number for all")
    return values


def _read(path: Path) -> dict:
    if not path.is_file():
        raise FolderError(f"{path} is missing: point Qwen3VLProcessor at a folder written by builder_qwen3vl.py")
    return json.loads(path.read_text(encoding="utf-8"))
