"""Running an export stage in a fresh interpreter, so that all of its memory goes back to the
system before the next stage starts: ``python -m genai_qwen3vl.export.stage_process PAYLOAD``.

PAYLOAD is a pickle of (module, function name, args, log level). The child pickles its outcome
next to it as PAYLOAD.result: None, or (the exception the stage raised, its formatted
traceback). The parent raises that exception with the child's traceback attached as its cause,
so ``--verbose`` shows where in the child it happened. A fresh interpreter, rather than
multiprocessing, so that it never re-runs the caller's ``__main__``.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Callable, Iterator

from ..errors import Qwen3VLExportError
from ..logs import configure_logging


class StageTraceback(Exception):
    """The traceback of an exception raised in a stage process (shown as the cause)."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n\n(in the stage process)\n" + self.text


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # kept across exec; Python then leaves it so
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked by the parent while it forks


@contextlib.contextmanager
def sigint_held() -> Iterator[None]:
    """SIGINT held back while the block runs, then handled as it would have been. Held twice: in
    this thread's signal mask, which a process forked in the block inherits until it sets its own
    disposition; and by a handler that only records it, since another thread of this process may
    take the signal, and Python then runs the handler in the main thread wherever it is (inside
    Popen, after the fork, before the Popen object exists to be killed)."""
    seen: list[int] = []
    main = threading.current_thread() is threading.main_thread()  # only there do handlers run, or can be set
    previous = signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum)) if main else None
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)  # one held back by the mask is recorded now
        if main:
            signal.signal(signal.SIGINT, previous)
        if seen:
            signal.raise_signal(signal.SIGINT)  # to the handler the block found (KeyboardInterrupt, as a rule)


def run_stage(isolate: bool, fn: Callable, *args) -> None:
    """Run ``fn(*args)`` here, or, with ``isolate``, in a fresh interpreter."""
    if not isolate:
        fn(*args)
        gc.collect()
        return
    level = logging.getLogger("genai_qwen3vl").getEffectiveLevel()
    with tempfile.TemporaryDirectory(prefix="genai_qwen3vl-stage-") as tmp:
        payload = Path(tmp) / "stage.pkl"
        payload.write_bytes(pickle.dumps((fn.__module__, fn.__name__, args, level)))
        # the stage ignores Ctrl-C (a terminal signals the whole process group): this process
        # handles it and kills the stage. SIGINT is held back while the child is forked, so that
        # a Ctrl-C then cannot leave a started stage process behind with nobody to kill it.
        proc = None
        try:
            with sigint_held():  # a Ctrl-C held back is raised at its end, with proc set
                proc = subprocess.Popen([sys.executable, "-m", __name__, str(payload)], preexec_fn=_ignore_sigint)
            proc.wait()
        except BaseException:
            if proc is not None:
                proc.kill()
                proc.wait()
            raise
        result_path = payload.with_suffix(".result")
        if not result_path.is_file():
            how = f"was killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exited with {proc.returncode}"
            raise Qwen3VLExportError(f"the {fn.__name__.strip('_')} process {how} (out of memory?)")
        outcome = pickle.loads(result_path.read_bytes())
    if outcome is not None:
        error, text = outcome
        raise error from StageTraceback(text)


def main(payload: Path) -> int:
    module, name, args, level = pickle.loads(payload.read_bytes())
    configure_logging(verbose=level <= logging.DEBUG)
    outcome = None
    try:
        getattr(importlib.import_module(module), name)(*args)
    except BaseException as exc:  # noqa: BLE001 -- every outcome goes back to the parent, which decides what to show
        outcome = (exc, traceback.format_exc())
    result = payload.with_suffix(".result")
    try:
        result.write_bytes(pickle.dumps(outcome))
    except (pickle.PicklingError, TypeError, AttributeError):  # an exception that does not pickle: its text
        exc, text = outcome
        result.write_bytes(pickle.dumps((Qwen3VLExportError(f"{type(exc).__name__}: {exc}"), text)))
    return 0 if outcome is None else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
