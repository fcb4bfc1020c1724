"""og in a process of its own: the generation worker.

onnxruntime-genai 0.18's Python bindings keep the GIL while ``generate_next_token`` runs (a Python
thread beside a generator runs once per token, not once per millisecond). Generating in the server's
process would freeze its event loop for a whole prefill (seconds with an image): no ``/health``, no
429, no bytes to any other client. So the og model is loaded once, in this worker process; each
request is a thread here with its own ``og.Generator``;
the HTTP process prepares inputs (numpy arrays) and reads tokens back over a pipe.

    HTTP process                                    worker process (og.Model, loaded once)
    Start(job, arrays, search, guidance)   ----->   thread: a TokenStream (runtime/generate.py)
    Cancel(job)                            ----->   asked before each token
                                           <-----   Token(job, token)
                                           <-----   Done(job, cancelled, prefill_s, decode_s)
                                           <-----   Error(job, message)
    Stop() or the pipe closing             ----->   exits

The messages are the typed ones of ``messages.py``.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import signal
import threading
from pathlib import Path
from typing import Callable

from ...errors import ServerError
from .messages import Cancel, Done, Error, Fatal, FromWorker, Ready, Start, Stop, Token

log = logging.getLogger("genai_qwen3vl.serve")
_job_ids = itertools.count(1)  # unique across workers: a job of a dead worker never names a job of its successor
LOAD_TIMEOUT_ENV = "GENAI_QWEN3VL_WORKER_LOAD_TIMEOUT"
# How long a worker may take to load the model (seconds; the environment variable above overrides it):
# generous, since a large checkpoint on a slow disk loads in minutes, but bounded, since a worker that
# hangs while loading (a stuck mount, a file that never reads) would otherwise mean 503 forever.
DEFAULT_LOAD_TIMEOUT = 900.0


def load_timeout() -> float:
    value = os.environ.get(LOAD_TIMEOUT_ENV, "")
    try:
        seconds = float(value) if value else DEFAULT_LOAD_TIMEOUT
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise ServerError(f"{LOAD_TIMEOUT_ENV}={value!r} is not a number of seconds > 0; unset it for {DEFAULT_LOAD_TIMEOUT:g} s")
    return seconds


def worker_main(model_dir: str, conn, threads: int | None = None) -> None:
    """The worker process: load og's model, then run generations until told to stop."""
    # Ctrl-C and SIGTERM reach the whole process group; the server drains, then stops us
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        import onnxruntime_genai as og

        from ..generate import TokenStream, load_model

        model = load_model(model_dir, threads)
    except Exception as exc:  # noqa: BLE001 - og raises RuntimeError, a broken install ImportError: all go back as one line
        conn.send(Fatal(f"{type(exc).__name__}: {exc}"))
        return
    _warm_guidance(og, model)
    conn.send(Ready())
    send_lock = threading.Lock()
    cancels: dict[int, threading.Event] = {}

    def send(message: FromWorker) -> None:
        with send_lock:
            conn.send(message)

    def generate(start: Start, cancel: threading.Event) -> None:
        try:
            stream = TokenStream(model, start.arrays, start.search, cancel.is_set, start.guidance)
            for token in stream:
                send(Token(start.job, token))
            send(Done(start.job, stream.cancelled, stream.prefill_s, stream.decode_s))
        except Exception as exc:  # noqa: BLE001 - reported to the client as a 500, logged by the server
            send(Error(start.job, f"{type(exc).__name__}: {exc}"))
        finally:
            cancels.pop(start.job, None)

    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            break
        if isinstance(message, Start):
            cancels[message.job] = threading.Event()
            threading.Thread(target=generate, args=(message, cancels[message.job]), daemon=True).start()
        elif isinstance(message, Cancel):
            if message.job in cancels:
                cancels[message.job].set()
        elif isinstance(message, Stop):
            break
    for event in list(cancels.values()):
        event.set()


def _warm_guidance(og, model) -> None:
    """og builds llguidance's view of the tokenizer once per model, on the first generator with a
    constraint (0.3 s for Qwen's vocabulary, measured by benchmarks/structured.py): built here,
    while loading, it is not in the first structured request's time to first token."""
    try:
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=1)
        params.set_guidance("regex", "a")
        og.Generator(model, params)
    except Exception as exc:  # noqa: BLE001 - structured requests would meet the same error and report it
        log.warning("onnxruntime-genai's guidance could not start (%s); structured output will fail", exc)


class Worker:
    """The HTTP process's side: starts the worker, sends jobs, hands each message to its job."""

    def __init__(self, model_dir: Path, threads: int | None = None):
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no fork of the server's threads
        self.conn, child = context.Pipe()
        self.process = context.Process(target=worker_main, args=(str(model_dir), child, threads), name="genai-qwen3vl-og", daemon=True)
        self.process.start()
        child.close()
        self.handlers: dict[int, Callable[[str, FromWorker], None]] = {}
        self.lock = threading.Lock()
        self.on_death: Callable[[str], None] | None = None
        self.closing = False
        self.dead = False  # the reader saw the pipe close: no job is started here any more

    def wait_ready(self, timeout: float | None = None) -> None:
        """Blocks until og has loaded the model; ValueError with og's message if it cannot, or if
        it has not within ``timeout`` seconds (``load_timeout()``; the worker is killed then)."""
        timeout = load_timeout() if timeout is None else timeout
        try:
            if not self.conn.poll(timeout):
                self.process.kill()
                self.process.join()
                raise ServerError(f"the generation worker did not load the model within {timeout:g} s ({LOAD_TIMEOUT_ENV} sets this)")
            message = self.conn.recv()
        except (EOFError, OSError):
            self.process.join(5)
            raise ServerError(f"the generation worker exited (code {self.process.exitcode}) while loading the model") from None
        if isinstance(message, Fatal):
            raise ServerError(f"onnxruntime-genai cannot load it: {message.message}")
        threading.Thread(target=self._read, name="worker-reader", daemon=True).start()

    def start(self, arrays: dict, search: dict, handler: Callable[[str, FromWorker], None], guidance: tuple[str, str] | None = None) -> int:
        """Sends the job (og's structured-output ``guidance`` with it, if any); ``handler(kind,
        message)`` gets its Token, Done and Error messages on the reader thread."""
        with self.lock:
            if self.dead:
                raise OSError("the generation worker has died")
            job = next(_job_ids)
            self.handlers[job] = handler
            try:
                self.conn.send(Start(job, arrays, search, guidance))
            except BaseException:
                del self.handlers[job]
                raise
        return job

    def cancel(self, job: int) -> None:
        with self.lock:
            if job in self.handlers:
                try:
                    self.conn.send(Cancel(job))
                except OSError:  # the worker has just died: its jobs end with an error anyway
                    pass

    def _read(self) -> None:
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                break
            handler = self.handlers.get(message.job)
            if isinstance(message, (Done, Error)):
                with self.lock:
                    self.handlers.pop(message.job, None)
            if handler is not None:
                handler(message.kind, message)
        # the worker died (killed, out of memory): every job still waiting gets an error
        with self.lock:
            self.dead = True
            orphans, self.handlers = list(self.handlers.items()), {}
        for job, handler in orphans:
            handler("error", Error(job, "the generation worker died"))
        if not self.closing:
            self.process.join(5)
            log.error("the generation worker died (exit code %s)", self.process.exitcode)
            if self.on_death:
                self.on_death(f"the generation worker died (exit code {self.process.exitcode})")

    def close(self, timeout: float = 10.0) -> None:
        self.closing = True
        try:
            with self.lock:
                self.conn.send(Stop())
        except (OSError, BrokenPipeError):
            pass
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
