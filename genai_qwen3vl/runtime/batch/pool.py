"""The batch job's engine on this machine: N processes, each with its own og model and threads,
fed one row at a time over a pipe (og 0.18 holds the GIL while it computes, so processes, not
threads). A process that dies (a crash inside og, the OOM killer) is replaced and its row is tried
once more; a row that kills two processes is recorded as that row's error.

    parent                                      engine process (og model loaded once)
    Row                        ----- pipe ---->  RowAnswerer.answer(row)
                               <----           ("done", result)   or ("fatal", message) at load
    None / the pipe closing    ---->           exits
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable, Iterable
from multiprocessing.connection import wait
from pathlib import Path

from ...errors import InputError
from .table import Row

ATTEMPTS = 2  # a row is given to at most this many processes


class EngineError(InputError):
    """The model cannot be loaded by an engine process (one line: og's message)."""


def engine_main(conn, model_dir: str, search: dict, max_tokens: int, threads: int | None, context: int | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops us
    try:
        from .answer import RowAnswerer

        answerer = RowAnswerer(model_dir, search, max_tokens, threads, context)
    except Exception as exc:  # noqa: BLE001 - og's RuntimeError, a broken install: one line to the parent
        conn.send(("fatal", f"{type(exc).__name__}: {' '.join(str(exc).split())}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            row = conn.recv()
        except (EOFError, OSError):
            return
        if row is None:
            return
        conn.send(("done", answerer.answer(row)))


class Engine:
    """One engine process and the row it holds."""

    def __init__(self, context, args: tuple):
        self.conn, child = context.Pipe()
        self.process = context.Process(target=engine_main, args=(child, *args), name="genai-qwen3vl-batch", daemon=True)
        self.process.start()
        child.close()
        self.row: Row | None = None
        self.ready = False


class LocalPool:
    """``workers`` engine processes over ``model_dir``; ``run(rows, on_result)`` answers them."""

    def __init__(self, model_dir: str | Path, search: dict, max_tokens: int, workers: int, threads: int | None, context: int | None = None):
        self.context = multiprocessing.get_context("spawn")  # fresh interpreters: no fork of the parent's threads
        self.args = (str(model_dir), search, max_tokens, threads, context)
        self.workers = workers
        self.engines: list[Engine] = []

    def run(self, rows: Iterable[Row], on_result: Callable[[dict], None]) -> None:
        pending = list(rows)[::-1]  # popped from the end: input order
        attempts: dict[str, int] = {}
        self.engines = [Engine(self.context, self.args) for _ in range(min(self.workers, len(pending)) or 1)]
        busy = 0
        while pending or busy:
            for engine in self.engines:
                if engine.ready and engine.row is None and pending:
                    engine.row = pending.pop()
                    attempts[engine.row.id] = attempts.get(engine.row.id, 0) + 1
                    engine.conn.send(engine.row)
                    busy += 1
            ready = wait([e.conn for e in self.engines] + [e.process.sentinel for e in self.engines])
            for engine in list(self.engines):
                if engine.conn in ready:
                    try:
                        kind, payload = engine.conn.recv()
                    except (EOFError, OSError):
                        kind, payload = "died", None
                    if kind == "ready":
                        engine.ready = True
                        continue
                    if kind == "fatal":
                        self.close()
                        raise EngineError(f"onnxruntime-genai cannot load {self.args[0]}: {payload}")
                    if kind == "done":
                        engine.row, busy = None, busy - 1
                        on_result(payload)
                        continue
                if engine.process.sentinel in ready or (engine.conn in ready and kind == "died"):
                    engine.process.join(5)
                    if not engine.ready:
                        self.close()
                        raise EngineError(f"an engine process exited (code {engine.process.exitcode}) while loading {self.args[0]}")
                    row = engine.row
                    self.engines.remove(engine)
                    self.engines.append(Engine(self.context, self.args))
                    if row is not None:
                        busy -= 1
                        if attempts[row.id] >= ATTEMPTS:
                            code = engine.process.exitcode
                            why = f"the engine process died on this row {ATTEMPTS} times (exit code {code}); it is skipped"
                            on_result(dead_row(row, why))
                        else:
                            pending.append(row)

    def close(self) -> None:
        for engine in self.engines:
            try:
                engine.conn.send(None)
            except (OSError, ValueError):
                pass
        for engine in self.engines:
            engine.process.join(2)
            if engine.process.is_alive():
                engine.process.kill()
                engine.process.join(5)
        self.engines = []


def dead_row(row: Row, error: str) -> dict:
    """The output row of a row no engine could answer."""
    return {
        "id": row.id,
        "text": None,
        "reasoning": None,
        "json": None,
        "tool_calls": None,
        "prompt_tokens": None,
        "completion_tokens": None,
        "seconds": None,
        "error": error,
    }
