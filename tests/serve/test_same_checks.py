"""One check, one message, whatever the entry point: the sampling ranges (runtime/sampling.py) and
the image decode limit (runtime/images.py) refuse the same values in the server (400), the chat
command (exit 2) and the Python runtime (ValueError), in the same words."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib

import httpx
import pytest

from genai_qwen3vl.runtime.chat import main as chat_main
from genai_qwen3vl.runtime.processor import Qwen3VLProcessor
from genai_qwen3vl.runtime.sampling import check_search_options

from .conftest import PRESET, data_url

# (field, value, the message every entry point gives)
SAMPLING = [
    ("temperature", -1, "'temperature' must be >= 0.0, got -1.0"),
    ("temperature", 2.5, "'temperature' must be <= 2.0, got 2.5"),
    ("top_p", 0, "'top_p' must be > 0.0, got 0.0"),
    ("top_p", 1.5, "'top_p' must be <= 1.0, got 1.5"),
    ("top_k", -2, "'top_k' must be >= -1, got -2"),
    ("repetition_penalty", 0, "'repetition_penalty' must be > 0.0, got 0.0"),
]


def test_sampling_values_are_refused_alike_by_server_chat_and_runtime(served, capsys):
    for name, value, message in SAMPLING:
        body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, name: value}
        r = httpx.post(f"{served.base_url}/v1/chat/completions", json=body, timeout=60)
        assert r.status_code == 400 and r.json()["error"]["message"] == message, (name, value, r.text)
        with pytest.raises(SystemExit) as exit_:
            chat_main(["folder", f"--{name.replace('_', '-')}={value}", "-p", "Hi"])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.rstrip().endswith(message), (name, value, err)
        with pytest.raises(ValueError) as refused:
            check_search_options({name: value})
        assert str(refused.value) == message
    ok = httpx.post(
        f"{served.base_url}/v1/chat/completions",
        timeout=60,
        json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "temperature": 0},
    )
    assert ok.status_code == 200, ok.text


def _png_header(path, width: int, height: int):
    """A valid PNG whose header says width x height (a few hundred bytes; decoded: gigabytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side", [8500, 10000, 40000])
def test_one_image_limit_and_one_message_in_server_chat_and_processor(served, exported, tmp_path, side):
    """Below PIL's own decompression-bomb limit (89 M pixels), above it (it warns) and above twice it
    (it refuses before the size is known): always our limit and our message."""
    path = _png_header(tmp_path / "big.png", side, side)
    size = f"{side}x{side} pixels, " if side * side <= 2 * 89478485 else ""
    tail = f"is too large: {size}more than the 67108864 pixels decoded here (--max-decode-pixels); send a smaller image"
    r = httpx.post(
        f"{served.base_url}/v1/chat/completions",
        timeout=60,
        json={"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(path)}}]}], "max_tokens": 2},
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "image_too_large", r.text
    assert r.json()["error"]["message"] == f"image 0: the image {tail}", r.text
    proc = subprocess.run(
        [sys.executable, "-m", "genai_qwen3vl", "chat", str(exported(PRESET)), "--image", str(path), "-p", "Hi"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr == f"error: image file {path} {tail}\n", proc.stderr
    with pytest.raises(ValueError) as refused:
        Qwen3VLProcessor(exported(PRESET)).process("<|vision_start|><|image_pad|><|vision_end|>", images=[path])
    assert str(refused.value).endswith(f"image file {path} {tail}"), refused.value
