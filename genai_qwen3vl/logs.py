"""Keeping the libraries' own console output out of the user's way."""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from typing import Iterator

log = logging.getLogger("genai_qwen3vl")

# libraries whose notes (exporter passes, weight loading, quantizer progress) are not for the user
NOISY_LOGGERS = ("transformers", "torch", "onnxscript", "onnx_ir", "onnxruntime", "huggingface_hub", "httpx")


def configure_logging(verbose: bool) -> None:
    """The command lines' logging: our progress at INFO (DEBUG with --verbose); every library
    at WARNING and the chattiest of them (transformers, torch.onnx, onnxruntime's quantizer,
    huggingface_hub, ...) at ERROR; with --verbose everything at DEBUG. Stage processes call it
    too, so they print the same way."""
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.ERROR)


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
