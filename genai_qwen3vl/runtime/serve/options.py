"""The server's options, with their defaults declared once: ``main.py``'s flags take theirs from
these fields, and ``create_app`` takes the options themselves."""

from __future__ import annotations

import dataclasses
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    model_dir: Path
    model_name: str | None = None  # the model id clients send and /v1/models lists; None: the folder's name
    api_key: str | None = None
    max_concurrency: int = 1
    max_queue: int = 16
    allowed_media_dir: Path | None = None
    min_image_pixels: int | None = None  # None: the checkpoint's
    max_image_pixels: int | None = None
    timeout: float = 600.0  # seconds per request, queue included
    max_model_len: int | None = None  # None: genai_config.json's max_length
    max_request_bytes: int = 64 * 1024 * 1024
    max_decode_pixels: int = 8192 * 8192
    max_request_pixels: int = 8192 * 8192
    limit_images: int = 16
    limit_videos: int = 2
    threads: int | None = None  # og's intra-op threads per session; None: og's default (every core)
    # the HTTP server's (uvicorn's) side
    host: str = "127.0.0.1"
    port: int = 8000
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    keep_alive_timeout: float = 5.0
    log_level: str = "info"

    @property
    def name(self) -> str:
        return self.model_name or self.model_dir.resolve().name


DEFAULTS = ServeOptions(model_dir=Path("."))  # the defaults, read by the flags
