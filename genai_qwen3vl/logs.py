"""Keeping the exporters' own console output out of the user's way."""

from __future__ import annotations

import contextlib
import io
import logging
from typing import Iterator

log = logging.getLogger("genai_qwen3vl")


@contextlib.contextmanager
def captured_output(label: str) -> Iterator[io.StringIO]:
    """Send what the block prints (torch.onnx's and og's builder's progress lines, warnings)
    to the debug log instead of the console; ``--verbose`` shows it."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            yield buffer
    finally:
        text = buffer.getvalue().strip()
        if text:
            log.debug("%s output:\n%s", label, text)
