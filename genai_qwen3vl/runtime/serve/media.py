"""Where the server takes images and videos from: ``data:`` URLs, and local files only under
``--allowed-media-dir`` (after resolving symlinks). The server makes no outbound requests, so
``http(s)://`` media are refused. Every image's size is read from its header and checked before a
single pixel is decoded (a 1x1-looking PNG can unpack to gigapixels)."""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import io
import os
import tempfile
from pathlib import Path

import numpy as np

from ...errors import InputError
from ..images import ImageTooLarge, load_image, open_image
from .errors import APIError, bad_request, quote

_REMOTE = ("http://", "https://", "ftp://", "s3://", "gs://")


class MediaPolicy:
    def __init__(self, allowed_dir: Path | None, max_decode_pixels: int):
        self.allowed_dir = allowed_dir.resolve() if allowed_dir else None
        self.max_decode_pixels = max_decode_pixels

    # ------------------------------------------------------------------ images
    def image(self, url: str, where: str) -> np.ndarray:
        """HxWx3 uint8 RGB."""
        return self.decode_image(self.image_bytes(url, where), where)

    def image_bytes(self, url: str, where: str) -> bytes:
        """The encoded image (nothing decoded)."""
        if _is_data(url):
            media_type, payload = _data_url(url, where)
            if not media_type.startswith("image/"):
                raise bad_request(
                    f"{where}: the data URL holds {quote(media_type) if media_type else 'no media type'}, not an image",
                    where,
                    "invalid_image",
                )
            return payload
        path = self._local(url, where)
        with open(path, "rb") as f:
            return f.read()

    def image_pixels(self, payload: bytes, where: str) -> int:
        """Width x height from the image's header (the limits checked; no pixel decoded)."""
        return self._decode_image(io.BytesIO(payload), where, header_only=True)

    def decode_image(self, payload: bytes, where: str) -> np.ndarray:
        return self._decode_image(io.BytesIO(payload), where)

    def _decode_image(self, stream: io.BytesIO, where: str, header_only: bool = False):
        from PIL import UnidentifiedImageError

        try:
            # the one decode limit and its message (runtime/images.py), checked from the header
            with open_image(stream, f"{where}: the image", self.max_decode_pixels) as image:
                width, height = image.size
                if header_only:
                    return width * height
                image.load()
                return load_image(image)
        except APIError:
            raise
        except ImageTooLarge as exc:
            raise APIError(400, str(exc), param=where, code="image_too_large") from None
        except UnidentifiedImageError:
            raise bad_request(
                f"{where}: the data is not an image format this server reads (PNG, JPEG, WebP, GIF, BMP, ...)", where, "invalid_image"
            ) from None
        except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt image data
            raise bad_request(f"{where}: the image cannot be decoded ({exc})", where, "invalid_image") from None

    # ------------------------------------------------------------------ videos
    @contextlib.contextmanager
    def video(self, url: str, where: str):
        """A path to the video file (a data URL is written to a temporary file, removed after)."""
        if not _is_data(url):
            path = self._local(url, where)
            self._check_video(path, where)
            yield from _path_hidden(path, where)
            return
        media_type, payload = _data_url(url, where)
        if not media_type.startswith("video/"):
            raise bad_request(
                f"{where}: the data URL holds {quote(media_type) if media_type else 'no media type'}, not a video", where, "invalid_video"
            )
        fd, name = tempfile.mkstemp(prefix="genai-qwen3vl-video-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
            self._check_video(Path(name), where)
            yield from _path_hidden(Path(name), where)
        finally:
            os.unlink(name)

    def _check_video(self, path: Path, where: str) -> None:
        try:
            import av
        except ImportError:
            raise APIError(400, f"{where}: this server cannot decode videos; install PyAV (pip install av)", param=where) from None
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise bad_request(f"{where}: the file has no video stream", where, "invalid_video")
                stream = container.streams.video[0]
                pixels = int(stream.codec_context.width) * int(stream.codec_context.height)
        except av.FFmpegError as exc:
            # FFmpeg's text without its file name (a temporary file of the server's for a data URL)
            why = exc.strerror or type(exc).__name__
            raise bad_request(f"{where}: the video cannot be decoded ({why})", where, "invalid_video") from None
        if pixels > self.max_decode_pixels:
            raise bad_request(
                f"{where}: the video's frames are {pixels} pixels, more than this server decodes "
                f"({self.max_decode_pixels}; --max-decode-pixels)",
                where,
                "video_too_large",
            )

    # ------------------------------------------------------------------ local files
    def _local(self, url: str, where: str) -> Path:
        if url.lower().startswith(_REMOTE):
            raise bad_request(
                f"{where}: remote URLs are refused (this server makes no outbound requests); "
                "send the file as a data: URL, or as a local path under --allowed-media-dir",
                where,
                "remote_media_refused",
            )
        if self.allowed_dir is None:
            raise APIError(
                403,
                f"{where}: local files are not served; start the server with --allowed-media-dir DIR, or send the file as a data: URL",
                param=where,
                code="local_media_disabled",
            )
        raw = url[len("file://") :] if url[:7].lower() == "file://" else url
        if "://" in raw:
            raise bad_request(f"{where}: unsupported URL scheme in {quote(url)} (data: or a local path)", where)
        if "\0" in raw:
            raise bad_request(f"{where}: a file path cannot hold a NUL byte", where, "invalid_media_path")
        # containment first, existence after: every path outside the folder gets the same answer,
        # whether or not it exists (no file-existence oracle)
        refused = APIError(
            403, f"{where}: {quote(raw)} is not a file under --allowed-media-dir", param=where, code="media_path_not_allowed"
        )
        try:
            path = Path(raw).resolve()  # the symlinks that exist followed, the rest kept as written
        except (OSError, RuntimeError, ValueError):  # a symlink loop, a name too long
            raise refused from None
        if not path.is_relative_to(self.allowed_dir):
            raise refused
        try:
            os.stat(path)
        except FileNotFoundError:
            raise bad_request(f"{where}: {quote(raw)} does not exist under --allowed-media-dir", where, "media_not_found") from None
        except OSError:
            raise refused from None
        if not path.is_file() or not os.access(path, os.R_OK):
            raise refused
        return path


def _data_url(url: str, where: str) -> tuple[str, bytes]:
    """``data:[<media type>][;base64],<data>`` -> (media type, bytes); base64 required."""
    header, sep, data = url[len("data:") :].partition(",")  # the scheme in any case (RFC 3986)
    if not sep:
        raise bad_request(f"{where}: malformed data URL (no ',')", where, "invalid_data_url")
    fields = header.split(";")
    if "base64" not in [f.strip().lower() for f in fields[1:]]:
        raise bad_request(f"{where}: data URLs must be base64 (data:image/png;base64,...)", where, "invalid_data_url")
    try:
        payload = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"{where}: the data URL's base64 is malformed", where, "invalid_base64") from None
    if not payload:
        raise bad_request(f"{where}: the data URL is empty", where, "invalid_data_url")
    return fields[0].strip().lower(), payload


def _is_data(url: str) -> bool:
    return url[:5].lower() == "data:"


def _path_hidden(path: Path, where: str):
    """Yields ``path``; an error raised meanwhile (the processor decoding the file) says
    ``(where)`` instead of the path: no server paths (temporary files) in a client's error."""
    try:
        yield path
    except APIError as exc:
        exc.message = exc.message.replace(str(path), f"({where})")
        raise
    except ValueError as exc:
        # the same kind of error (ImageError, VideoError, ...), its message without the path
        hidden = copy.copy(exc) if isinstance(exc, InputError) else InputError()
        hidden.args = (str(exc).replace(str(path), f"({where})"),)
        raise hidden from None
