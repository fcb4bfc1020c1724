"""A time budget and a cancel flag for input preparation (chat template, media decoding), checked
where the work can stop: between rendered template lines, between decoded video frames, between
images. The server sets one per request (``--timeout``, the client going away); code run
without one (chat, the processor on its own) is not limited.

    with Budget(deadline=time.monotonic() + 5, cancel=event).active():
        processor.process(...)      # video.py and chat_template.py call check()
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import threading
import time


class Cancelled(Exception):
    """The preparation was stopped: ``reason`` is ``"timeout"`` or ``"cancelled"``."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass
class Budget:
    deadline: float  # time.monotonic()
    cancel: threading.Event = dataclasses.field(default_factory=threading.Event)

    def check(self) -> None:
        if self.cancel.is_set():
            raise Cancelled("cancelled")
        if time.monotonic() > self.deadline:
            raise Cancelled("timeout")

    @contextlib.contextmanager
    def active(self):
        token = _current.set(self)
        try:
            yield self
        finally:
            _current.reset(token)


_current: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("genai_qwen3vl_budget", default=None)


def current() -> Budget | None:
    return _current.get()


def check() -> None:
    """Raises Cancelled if the current preparation's budget is spent or it was cancelled."""
    budget = _current.get()
    if budget is not None:
        budget.check()
