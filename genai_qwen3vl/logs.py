"""Keeping the exporters' own console output out of the user's way."""

from __future__ import annotations

import contextlib
import io
import logging
from typing import Iterator

log = logging.getLogger("genai_qwen3vl")

# libraries whose INFO/WARNING chatter (exporter passes, weight loading) is not for the user
NOISY_LOGGERS = ("transformers", "torch", "onnxscript", "onnx_ir", "huggingface_hub", "httpx")


def configure_logging(verbose: bool) -> None:
    """The command line's logging: our progress at INFO (DEBUG with --verbose), libraries quiet
    unless --verbose. Stage processes call it too, so they print the same way."""
    import sys

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", stream=sys.stderr)
    if not verbose:
        for name in NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)


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
