"""Runs one export stage in a fresh interpreter: ``python -m genai_qwen3vl._stage PAYLOAD``.

PAYLOAD is a pickle of (module, function name, args, log level). The result (None, or the
exception the stage raised) is pickled next to it as PAYLOAD.result. A fresh interpreter,
rather than multiprocessing, so that it never re-runs the caller's ``__main__``.
"""

from __future__ import annotations

import importlib
import logging
import pickle
import sys
from pathlib import Path

from genai_qwen3vl.logs import configure_logging


def main(payload: Path) -> int:
    module, name, args, level = pickle.loads(payload.read_bytes())
    configure_logging(verbose=level <= logging.DEBUG)
    result: BaseException | None = None
    try:
        getattr(importlib.import_module(module), name)(*args)
    except BaseException as exc:  # handed back to the parent, which decides what to show
        result = exc
    try:
        payload.with_suffix(".result").write_bytes(pickle.dumps(result))
    except Exception:  # an exception that does not pickle: send its text
        payload.with_suffix(".result").write_bytes(pickle.dumps(RuntimeError(f"{type(result).__name__}: {result}")))
    return 0 if result is None else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
