"""The runtime refuses bad input with a typed error (genai_qwen3vl/errors.py: ``InputError`` and its
kinds), each still a ValueError, whose one-line message names the problem and the fix; and no
module of the runtime outside serve/ raises a bare ValueError."""

import ast
import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

import genai_qwen3vl.runtime
from genai_qwen3vl.errors import FolderError, ImageError, InputError, PromptError, Qwen3VLError, SamplingError, VideoError
from genai_qwen3vl.runtime import sampling
from genai_qwen3vl.runtime.chat import ChatError
from genai_qwen3vl.runtime.images import ImageTooLarge
from genai_qwen3vl.runtime.processor import Qwen3VLProcessor
from genai_qwen3vl.testing.media import make_frames, make_picture

RUNTIME = Path(genai_qwen3vl.runtime.__file__).parent
IMG = "<|vision_start|><|image_pad|><|vision_end|>"
VID = "<|vision_start|><|video_pad|><|vision_end|>"


def _bare_value_errors(source: str) -> list[int]:
    """The lines of ``source`` that raise ValueError itself (``raise ValueError`` or ``raise ValueError(...)``)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Raise) and node.exc is not None:
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(exc, ast.Name) and exc.id == "ValueError":
                lines.append(node.lineno)
    return sorted(lines)


def test_the_scan_finds_both_spellings_and_passes_typed_errors():
    source = "def f(x):\n    if x:\n        raise ValueError('x')\n    raise ValueError\n\n\ndef g():\n    raise ImageError('y')\n"
    assert _bare_value_errors(source) == [3, 4]


def test_the_runtime_raises_no_bare_value_error():
    modules = sorted(RUNTIME.rglob("*.py"))
    assert len(modules) >= 10, modules
    found = [f"{p.relative_to(RUNTIME.parent)}:{line}" for p in modules for line in _bare_value_errors(p.read_text(encoding="utf-8"))]
    assert not found, f"raise a typed error from genai_qwen3vl/errors.py (an InputError kind, FolderError or ServerError) instead: {found}"


def test_the_kinds_are_qwen3vl_errors_and_value_errors():
    for kind in (InputError, ImageError, VideoError, PromptError, SamplingError, ImageTooLarge, ChatError):
        assert issubclass(kind, Qwen3VLError) and issubclass(kind, ValueError), kind
        assert kind.__doc__, kind
    assert issubclass(ImageTooLarge, ImageError) and issubclass(ChatError, InputError)


@pytest.fixture(scope="module")
def processor(exported):
    return Qwen3VLProcessor(exported("awkward"))


def _refused(kind: type, problem: str, fix: str, call, *args, **kwargs) -> Exception:
    """``call(*args, **kwargs)`` raises exactly ``kind`` (a ValueError), in one line naming ``problem`` and ``fix``."""
    with pytest.raises(ValueError) as raised:
        call(*args, **kwargs)
    error, message = raised.value, str(raised.value)
    assert type(error) is kind and isinstance(error, Qwen3VLError), (type(error), message)
    assert "\n" not in message and problem in message and fix in message, message
    return error


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height and which holds no pixel data."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b""))
    return path


def test_bad_images(processor, tmp_path):
    process = processor.process
    bomb = _png_header_only(tmp_path / "bomb.png", 40000, 40000)
    _refused(ImageTooLarge, "image 0: image file", "(--max-decode-pixels); send a smaller image", process, IMG, images=[bomb])
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not a JPEG after its first bytes")
    _refused(ImageError, "corrupt.jpg cannot be decoded", "give a complete image file", process, IMG, images=[corrupt])
    _refused(ImageError, "absent.png does not exist", "check the path", process, IMG, images=[tmp_path / "absent.png"])
    _refused(ImageError, "aspect ratio must be smaller", "crop or pad it to under 200:1", process, IMG, images=[make_picture(10, 2100)])
    _refused(ImageError, "zero size", "at least 1x1", process, IMG, images=[np.zeros((0, 8, 3), np.uint8)])


def test_bad_videos(processor, tmp_path):
    process = processor.process
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\0" * 1000)
    _refused(VideoError, "video 0: video file", "re-encode it", process, VID, videos=[garbage])
    _refused(VideoError, "same size", "resize them to one size", process, VID, videos=[[make_picture(32, 32), make_picture(32, 48)]])
    _refused(VideoError, "no frames", "give one frame or more", process, VID, videos=[[]])
    _refused(VideoError, "2 entries for 1", "one per video", process, VID, videos=[make_frames(4, 32, 32)], video_fps=[1, 2])
    # an image's error inside a video is the video's error
    _refused(VideoError, "video 0: absolute aspect ratio", "crop or pad", process, VID, videos=[make_frames(2, 2, 600)])


def test_bad_prompts(processor, exported, tmp_path):
    _refused(PromptError, "2 image markers", "give one image per marker", processor.process, IMG * 2, images=[make_picture(32, 32)])
    _refused(PromptError, "0 video markers", "give one video per marker", processor.process, "hi", videos=[make_frames(4, 32, 32)])
    small = tmp_path / "small_context"
    shutil.copytree(exported("awkward"), small)
    cfg = json.loads((small / "genai_config.json").read_text())
    cfg["model"]["context_length"] = 8
    (small / "genai_config.json").write_text(json.dumps(cfg))
    too_long = Qwen3VLProcessor(small).process
    _refused(PromptError, "longer than the model's context of 8", "shorten it", too_long, IMG, images=[make_picture(96, 128)])
    (small / "preprocessor_config.json").unlink()
    error = _refused(FolderError, "preprocessor_config.json is missing", "a folder written by builder_qwen3vl.py", Qwen3VLProcessor, small)
    assert str(error).count("preprocessor_config.json") == 1, error


def test_bad_options(tmp_path):
    """A sampling message names the option and its value (the problem) and the range it must be in (the fix)."""
    _refused(SamplingError, "'temperature'", "must be <= 2.0, got 5.0", sampling.check, "temperature", 5)
    _refused(SamplingError, "'top_k'", "must be an integer, got 1.5", sampling.check_search_options, {"top_k": 1.5})
    _refused(SamplingError, "'seed'", "must be >= 0, got -1", sampling.check_search_options, {"random_seed": -1})
    _refused(InputError, "got 'cv2'", "must be one of ('pil', 'torchvision')", Qwen3VLProcessor, tmp_path, image_backend="cv2")
