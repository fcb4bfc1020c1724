"""The processor raises ValueError naming the problem for bad images, videos and prompts."""

import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from genai_qwen3vl.runtime.processor import Qwen3VLProcessor
from genai_qwen3vl.testing.media import make_picture

IMG = "<|vision_start|><|image_pad|><|vision_end|>"


@pytest.fixture(scope="module")
def processor(exported):
    return Qwen3VLProcessor(exported("awkward"))


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height and which holds no pixel data."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b""))
    return path


def test_bad_image_files(processor, tmp_path, image_file):
    good = image_file(64, 64, 1)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:200])
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not an image at all")
    bomb = _png_header_only(tmp_path / "bomb.png", 40000, 40000)
    cases = [
        (truncated, "truncated.png cannot be decoded"),
        (garbage, "garbage.jpg cannot be decoded"),
        (bomb, "bomb.png is too large"),
        (tmp_path / "absent.png", "absent.png does not exist"),
        (np.zeros((0, 10, 3), np.uint8), "zero size"),
        (np.zeros((10, 10, 3), np.float32), "uint8"),
        (make_picture(10, 2100), "aspect ratio"),
    ]
    for image, message in cases:
        with pytest.raises(ValueError, match=message.replace(".", r"\.")):
            processor.process(IMG, images=[image])


def test_bad_videos_and_prompts(processor, tmp_path, exported):
    with pytest.raises(ValueError, match="video 0: .*does not exist"):
        processor.process("<|vision_start|><|video_pad|><|vision_end|>", videos=[tmp_path / "none.mp4"])
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\0" * 1000)
    with pytest.raises(ValueError, match="bad.mp4 cannot be decoded"):
        processor.process("<|vision_start|><|video_pad|><|vision_end|>", videos=[bad])
    with pytest.raises(ValueError, match="video_fps has 2 entries for 1 videos"):
        processor.process("<|vision_start|><|video_pad|><|vision_end|>", videos=[np.zeros((4, 32, 32, 3), np.uint8)], video_fps=[1, 2])
    small = tmp_path / "small_context"
    shutil.copytree(exported("awkward"), small)
    cfg = json.loads((small / "genai_config.json").read_text())
    cfg["model"]["context_length"] = 8
    (small / "genai_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="longer than the model.s context of 8"):
        Qwen3VLProcessor(small).process(IMG, images=[make_picture(96, 128)])


def test_only_unreadable_images_are_reported_as_unreadable(image_file, monkeypatch):
    """A file PIL cannot decode is named as such; anything else (here an injected MemoryError
    while decoding) is not turned into "cannot be decoded"."""
    from PIL import Image

    from genai_qwen3vl.runtime.images import load_image

    def fail(*args, **kwargs):
        raise MemoryError("injected")

    monkeypatch.setattr(Image, "open", fail)
    with pytest.raises(MemoryError, match="injected"):
        load_image(image_file(32, 32, 1))
