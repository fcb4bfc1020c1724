"""og in a process of its own: the generation worker.

onnxruntime-genai 0.18's Python bindings keep the GIL while ``generate_next_token`` runs
(measured here: a Python thread beside a generator ran once per token, not once per
millisecond). Generating in the server's process would freeze its event loop for a whole prefill
(seconds with an image): no ``/health``, no 429, no bytes to any other client. So the og model is
loaded once, in this worker process; each request is a thread here with its own ``og.Generator``;
the HTTP process prepares inputs (numpy arrays) and reads tokens back over a pipe.

    HTTP process                                    worker process (og.Model, loaded once)
    ("start", id, arrays, search options)  ----->   thread: og.Generator, one token at a time
    ("cancel", id)                         ----->   checked between tokens
                                           <-----   ("token", id, token)
                                           <-----   ("done", id, finish, first_token_s, decode_s)
                                           <-----   ("error", id, message)
    ("stop",) or the pipe closing          ----->   exits
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path
from typing import Callable

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
        raise ValueError(f"{LOAD_TIMEOUT_ENV}={value!r} is not a number of seconds > 0; unset it for {DEFAULT_LOAD_TIMEOUT:g} s")
    return seconds


def worker_main(model_dir: str, conn) -> None:
    """The worker process: load og's model, then run generations until told to stop."""
    # Ctrl-C and SIGTERM reach the whole process group; the server drains, then stops us
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        import onnxruntime_genai as og

        from ..processor import named_tensors

        model = og.Model(model_dir)
    except Exception as exc:  # noqa: BLE001 - og raises RuntimeError, a broken install ImportError: all go back as one line
        conn.send(("fatal", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready",))
    send_lock = threading.Lock()
    cancels: dict[int, threading.Event] = {}

    def send(message) -> None:
        with send_lock:
            conn.send(message)

    def generate(job: int, arrays: dict, search: dict, cancel: threading.Event) -> None:
        try:
            start = time.perf_counter()
            params = og.GeneratorParams(model)
            params.set_search_options(**search)
            generator = og.Generator(model, params)
            generator.set_inputs(named_tensors(arrays))
            first, finish = None, None
            while not generator.is_done():
                if cancel.is_set():
                    finish = "cancelled"
                    break
                generator.generate_next_token()
                first = first or time.perf_counter()
                send(("token", job, int(generator.get_next_tokens()[0])))
            del generator
            end = time.perf_counter()
            send(("done", job, finish, (first or end) - start, end - (first or end)))
        except Exception as exc:  # noqa: BLE001 - reported to the client as a 500, logged by the server
            send(("error", job, f"{type(exc).__name__}: {exc}"))
        finally:
            cancels.pop(job, None)

    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            break
        if message[0] == "start":
            _, job, arrays, search = message
            cancels[job] = threading.Event()
            threading.Thread(target=generate, args=(job, arrays, search, cancels[job]), daemon=True).start()
        elif message[0] == "cancel":
            if message[1] in cancels:
                cancels[message[1]].set()
        elif message[0] == "stop":
            break
    for event in list(cancels.values()):
        event.set()


class Worker:
    """The HTTP process's side: starts the worker, sends jobs, hands each message to its job."""

    def __init__(self, model_dir: Path):
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no fork of the server's threads
        self.conn, child = context.Pipe()
        self.process = context.Process(target=worker_main, args=(str(model_dir), child), name="genai-qwen3vl-og", daemon=True)
        self.process.start()
        child.close()
        self.handlers: dict[int, Callable] = {}
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
                raise ValueError(f"the generation worker did not load the model within {timeout:g} s ({LOAD_TIMEOUT_ENV} sets this)")
            message = self.conn.recv()
        except (EOFError, OSError):
            self.process.join(5)
            raise ValueError(f"the generation worker exited (code {self.process.exitcode}) while loading the model") from None
        if message[0] == "fatal":
            raise ValueError(f"onnxruntime-genai cannot load it: {message[1]}")
        threading.Thread(target=self._read, name="worker-reader", daemon=True).start()

    def start(self, arrays: dict, search: dict, handler: Callable) -> int:
        with self.lock:
            if self.dead:
                raise OSError("the generation worker has died")
            job = next(_job_ids)
            self.handlers[job] = handler
            try:
                self.conn.send(("start", job, arrays, search))
            except BaseException:
                del self.handlers[job]
                raise
        return job

    def cancel(self, job: int) -> None:
        with self.lock:
            if job in self.handlers:
                try:
                    self.conn.send(("cancel", job))
                except OSError:  # the worker has just died: its jobs end with an error anyway
                    pass

    def _read(self) -> None:
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                break
            handler = self.handlers.get(message[1])
            if message[0] in ("done", "error"):
                with self.lock:
                    self.handlers.pop(message[1], None)
            if handler is not None:
                handler(message[0], message[2:])
        # the worker died (killed, out of memory): every job still waiting gets an error
        with self.lock:
            self.dead = True
            orphans, self.handlers = list(self.handlers.values()), {}
        for handler in orphans:
            handler("error", ("the generation worker died",))
        if not self.closing:
            self.process.join(5)
            log.error("the generation worker died (exit code %s)", self.process.exitcode)
            if self.on_death:
                self.on_death(f"the generation worker died (exit code {self.process.exitcode})")

    def close(self, timeout: float = 10.0) -> None:
        self.closing = True
        try:
            with self.lock:
                self.conn.send(("stop",))
        except (OSError, BrokenPipeError):
            pass
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
