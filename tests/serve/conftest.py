"""A real ``genai-qwen3vl serve`` process on 127.0.0.1 serving tiny exports, and the official
``openai`` client pointed at it."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest

from genai_qwen3vl.testing.media import make_picture
from genai_qwen3vl.testing.server import ServerProcess

PRESET = "awkward"  # the served tiny model (fp32, CPU)


def data_url(array_or_path, kind: str = "image/png") -> str:
    """A picture (uint8 HxWx3) as a PNG data URL, or a file's bytes as a data URL of ``kind``."""
    if isinstance(array_or_path, (str, Path)):
        payload = Path(array_or_path).read_bytes()
    else:
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(array_or_path).save(buffer, format="PNG")
        payload = buffer.getvalue()
    return f"data:{kind};base64,{base64.b64encode(payload).decode()}"


def picture_url(height: int, width: int, seed: int) -> str:
    return data_url(make_picture(height, width, seed))


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    """The server's --allowed-media-dir."""
    return tmp_path_factory.mktemp("allowed_media")


@pytest.fixture(scope="session")
def served(exported, media_dir, tmp_path_factory):
    """The tiny fp32 export served with one generation slot; local media from ``media_dir``."""
    server = ServerProcess(
        exported(PRESET), "--allowed-media-dir", str(media_dir), "--max-queue", "64", log_dir=tmp_path_factory.mktemp("server_logs")
    )
    with server:
        yield server


@pytest.fixture(scope="session")
def client(served):
    import openai

    return openai.OpenAI(base_url=f"{served.base_url}/v1", api_key="none", max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def scripted_server(scripted, tmp_path_factory):
    """The scripted checkpoint (greedy: reasoning, </think>, a tool call) served as "qwen3-vl-scripted"."""
    with ServerProcess(scripted.exported, "--model-name", "qwen3-vl-scripted", log_dir=tmp_path_factory.mktemp("scripted_logs")) as s:
        yield s
