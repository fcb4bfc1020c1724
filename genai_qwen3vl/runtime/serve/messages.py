"""The messages between the HTTP process and the generation worker (``worker.py``), one frozen
dataclass each, pickled over a ``multiprocessing`` pipe. ``kind`` names a message in logs and in
the handlers a job registers.

    HTTP process -> worker:  Start(job, arrays, search, guidance), Cancel(job), Stop()
    worker -> HTTP process:  Ready() or Fatal(message) once, after loading the model; then per job
                             Token(job, token)..., and Done(job, ...) or Error(job, message)
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar


@dataclasses.dataclass(frozen=True)
class Start:
    """Run a generation: ``arrays`` the og inputs as numpy arrays, ``search`` og's search options,
    ``guidance`` og's structured-output (type, data) or None."""

    kind: ClassVar[str] = "start"
    job: int
    arrays: dict
    search: dict
    guidance: tuple[str, str] | None = None


@dataclasses.dataclass(frozen=True)
class Cancel:
    """End the job at its next token (a stop string matched, the client left, the timeout passed)."""

    kind: ClassVar[str] = "cancel"
    job: int


@dataclasses.dataclass(frozen=True)
class Stop:
    """The server is stopping: the worker cancels its jobs and exits."""

    kind: ClassVar[str] = "stop"


@dataclasses.dataclass(frozen=True)
class Ready:
    """og has loaded the model."""

    kind: ClassVar[str] = "ready"


@dataclasses.dataclass(frozen=True)
class Fatal:
    """og cannot load the model (one line: the exception's type and message)."""

    kind: ClassVar[str] = "fatal"
    message: str


@dataclasses.dataclass(frozen=True)
class Token:
    kind: ClassVar[str] = "token"
    job: int
    token: int


@dataclasses.dataclass(frozen=True)
class Done:
    """The generation ended; ``cancelled``: by a Cancel, otherwise og said it was done (the
    reader tells an end of sequence from the length limit by the last token)."""

    kind: ClassVar[str] = "done"
    job: int
    cancelled: bool
    prefill_s: float
    decode_s: float


@dataclasses.dataclass(frozen=True)
class Error:
    """og failed during the generation (or the worker died under it): one line for the log."""

    kind: ClassVar[str] = "error"
    job: int
    message: str


ToWorker = Start | Cancel | Stop
FromWorker = Ready | Fatal | Token | Done | Error
