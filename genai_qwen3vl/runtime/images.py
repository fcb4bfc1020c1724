"""Images as transformers' Qwen3-VL image processor prepares them, in numpy and PIL.

``preprocess_image(image, settings, backend)`` gives the pixel rows and grid transformers'
image processor gives: its ``smart_resize`` (Python's round half to even), the resize of the
chosen backend (PIL's filter, or torchvision's antialiased uint8 kernel ported bit for bit in
``resize.py``), rescale and normalize in the backend's dtypes and order, and the processor's
patch layout (merge-block order).
"""

from __future__ import annotations

import contextlib
import math
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np

from ..errors import ImageError, InputError, VideoError
from ..model.processor_settings import PixelSettings

MAX_ASPECT_RATIO = 200
# what PIL raises for a file it cannot decode: unidentified or truncated files (OSError), broken
# chunks (SyntaxError), short reads (EOFError, struct.error) and corrupt compressed data
UNREADABLE_IMAGE = (OSError, SyntaxError, EOFError, struct.error, zlib.error, ValueError)

# The one limit on an image's size, read from its header before a pixel is decoded (a PNG of a
# few hundred bytes can unpack to gigapixels): the server's and chat's --max-decode-pixels, the
# processor's max_decode_pixels. PIL's own decompression-bomb check (Image.MAX_IMAGE_PIXELS, 89 M
# pixels by default; it refuses twice that outright) answers through ``open_image`` in our words.
MAX_DECODE_PIXELS = 8192 * 8192

# the fixes the messages name for an image file that is missing or cannot be decoded
MISSING_FIX = "check the path"
UNREADABLE_FIX = "give a complete image file in a format PIL reads (PNG, JPEG, WebP, GIF, BMP, ...)"


class ImageTooLarge(ImageError):
    """An image with more pixels than the decode limit; its message names the limit's flag."""

    @classmethod
    def of(cls, what: str, size: str | None, limit: int) -> ImageTooLarge:
        """The error for the image ``what`` of ``size`` ("WxH", None when unknown) over ``limit``."""
        pixels = f"{size} pixels, " if size else ""
        fix = "(--max-decode-pixels); send a smaller image"
        return cls(f"{what} is too large: {pixels}more than the {limit} pixels decoded here {fix}")


@contextlib.contextmanager
def open_image(source, what: str, max_pixels: int = MAX_DECODE_PIXELS):
    """PIL's ``Image.open(source)`` (a path or a binary stream), nothing decoded yet; ImageTooLarge
    (``what`` names the image) when its header gives more than ``max_pixels`` pixels, also where
    PIL's decompression-bomb check would refuse it first."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the check below decides
        try:
            opened = Image.open(source)
        except Image.DecompressionBombError:  # more than twice PIL's limit, refused before its size is known
            pil_limit = 2 * Image.MAX_IMAGE_PIXELS
            raise ImageTooLarge.of(what, None, min(max_pixels, pil_limit)) from None
        with opened:
            width, height = opened.size  # from the header
            if width * height > max_pixels:
                raise ImageTooLarge.of(what, f"{width}x{height}", max_pixels)
            yield opened


def check_image_size(path, max_pixels: int = MAX_DECODE_PIXELS) -> None:
    """ImageError (a ValueError) when the image file at ``path`` is missing, unreadable or over ``max_pixels``
    (read from its header: nothing is decoded)."""
    if not Path(path).is_file():
        raise ImageError(f"image file {path} does not exist; {MISSING_FIX}")
    try:
        with open_image(path, f"image file {path}", max_pixels):
            pass
    except ImageTooLarge:
        raise
    except UNREADABLE_IMAGE as exc:
        raise ImageError(f"image file {path} cannot be decoded ({type(exc).__name__}: {exc}); {UNREADABLE_FIX}") from None


def smart_resize(
    height: int, width: int, factor: int, min_pixels: int, max_pixels: int, frames: int | None = None, temporal_factor: int = 2
) -> tuple[int, int]:
    """transformers' ``smart_resize``, to the letter: for an image (``frames`` None; the Qwen2-VL
    image processor's) or for a video of ``frames`` frames (the Qwen3-VL video processor's: the
    pixel budget counts every frame, and sides below ``factor`` are first scaled up)."""
    t_bar, count = 1, 1
    if frames is not None:
        if frames < temporal_factor:
            raise VideoError(
                f"t:{frames} must be larger than temporal_factor:{temporal_factor}; give a video of {temporal_factor} frames or more"
            )
        if height < factor or width < factor:
            scale = max(factor / height, factor / width)
            height = int(height * scale)
            width = int(width * scale)
        t_bar, count = round(frames / temporal_factor) * temporal_factor, frames
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise (ImageError if frames is None else VideoError)(
            f"absolute aspect ratio must be smaller than {MAX_ASPECT_RATIO}, got {max(height, width) / min(height, width)}; "
            f"crop or pad it to under {MAX_ASPECT_RATIO}:1"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if t_bar * h_bar * w_bar > max_pixels:
        beta = math.sqrt((count * height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif t_bar * h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (count * height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def load_image(image, max_pixels: int = MAX_DECODE_PIXELS) -> "np.ndarray":
    """A path, PIL image or HxW(xC) uint8 array -> HxWx3 uint8 RGB, as transformers converts it
    (transparency composited onto white). A file over ``max_pixels`` is refused before decoding."""
    from PIL import Image

    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise ImageError(f"image file {path} does not exist; {MISSING_FIX}")
        try:
            with open_image(path, f"image file {path}", max_pixels) as opened:
                opened.load()
                image = opened.copy()
        except ImageTooLarge:
            raise
        except UNREADABLE_IMAGE as exc:
            raise ImageError(f"image file {path} cannot be decoded ({type(exc).__name__}: {exc}); {UNREADABLE_FIX}") from None
    if isinstance(image, Image.Image):
        has_alpha = "A" in image.getbands() or image.info.get("transparency") is not None
        if has_alpha:
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return np.array(Image.alpha_composite(background, rgba).convert("RGB"))
        return np.array(image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ImageError(f"image arrays must be uint8 HxWx3, got dtype {array.dtype}")
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ImageError(f"image arrays must be HxW, HxWx3 or HxWx4 uint8, got shape {array.shape}")
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
            raise InputError(f"resample={resample} has no exact torchvision port here; use bicubic (3) or bilinear (2)")
        from .resize import torch_like_resize

        return torch_like_resize(frames, height, width, mode=_TORCH_MODES[resample])
    from PIL import Image

    return np.stack([np.array(Image.fromarray(f).resize((width, height), resample=resample)) for f in frames])


def rescale_normalize(chw_uint8: np.ndarray, s: PixelSettings, backend: str) -> np.ndarray:
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


def patchify(frames: np.ndarray, s: PixelSettings) -> tuple[np.ndarray, int, int, int]:
    """[T, C, H, W] float32 (T a multiple of temporal_patch_size) -> [T/tp*gh*gw, C*tp*P*P] in the
    processor's merge-block order."""
    t, c, h, w = frames.shape
    p, m, tp = s.patch_size, s.merge_size, s.temporal_patch_size
    gt, gh, gw = t // tp, h // p, w // p
    patches = frames.reshape(gt, tp, c, gh // m, m, p, gw // m, m, p)
    patches = patches.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return patches.reshape(gt * gh * gw, c * tp * p * p), gt, gh, gw


def preprocess_image(
    image, s: PixelSettings, backend: str = "pil", max_pixels: int = MAX_DECODE_PIXELS
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """One image -> (pixel rows, grid (1, gh, gw)), equal to transformers' image processor with
    the given backend; an image file over ``max_pixels`` is refused before decoding."""
    rgb = load_image(image, max_pixels)
    height, width = rgb.shape[:2]
    if height == 0 or width == 0:
        raise ImageError(f"image has zero size ({width}x{height}); give an image of at least 1x1 pixels")
    if s.do_resize:
        new_h, new_w = smart_resize(height, width, s.factor, s.min_pixels, s.max_pixels)
        rgb = resize_frames(rgb[None], new_h, new_w, s.resample, backend)[0]
    chw = rescale_normalize(np.moveaxis(rgb, -1, 0), s, backend)
    frames = np.broadcast_to(chw[None], (s.temporal_patch_size, *chw.shape))
    patches, gt, gh, gw = patchify(np.ascontiguousarray(frames), s)
    return patches, (gt, gh, gw)
