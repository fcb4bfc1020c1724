"""The scheduler: generation slots with their queue, and jobs (one generation each in the worker
process, its typed messages decoded here and handed to the event loop).

    request --> Slots.acquire (wait; 429 when the queue is full, 408 past --timeout)
            --> Job: Start to the worker; Token / Done / Error back on the reader thread,
                decoded (detokenizer.py) and put on the job's asyncio queue
            --> Slots.release when the worker reports the generation over

The slot is freed when the worker reports the generation over: after the last token, or within
one token of a client disconnecting, a stop string matching, or the timeout passing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time

from .detokenizer import Detokenizer
from .engine import Engine, Prepared
from .errors import APIError
from .messages import Done, FromWorker, Token
from .metrics import Metrics

log = logging.getLogger("genai_qwen3vl.serve")


@dataclasses.dataclass
class Outcome:
    """How a generation ended (its tokens are counted where they are read)."""

    finish: str  # stop | length | cancelled
    first_token_s: float | None
    decode_s: float


@dataclasses.dataclass(frozen=True)
class TokenText:
    """A generated token and the text it completes (empty while a character is incomplete)."""

    token: int
    text: str


@dataclasses.dataclass(frozen=True)
class Finished:
    """The generation's end; ``tail``: text the detokenizer held until then."""

    outcome: Outcome
    tail: str


@dataclasses.dataclass(frozen=True)
class Failed:
    """og failed, or the worker died under the generation."""

    message: str


Event = TokenText | Finished | Failed


class Slots:
    """``--max-concurrency`` generations at once, ``--max-queue`` waiting; the rest get 429."""

    def __init__(self, concurrency: int, max_queue: int, metrics: Metrics):
        self.semaphore = asyncio.Semaphore(concurrency)
        self.concurrency = concurrency
        self.max_queue = max_queue
        self.waiting = 0
        self.running = 0
        self.metrics = metrics
        self.mean_duration = 5.0  # seconds, updated as requests finish

    async def acquire(self, timeout: float) -> None:
        if self.semaphore.locked() and self.waiting >= self.max_queue:
            retry = max(1, math.ceil(self.mean_duration * (self.waiting + 1) / self.concurrency))
            raise APIError(
                429,
                f"the server is busy: {self.concurrency} generation(s) running and {self.waiting} waiting "
                f"(--max-concurrency {self.concurrency}, --max-queue {self.max_queue}); retry in {retry} s",
                type="rate_limit_error",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(retry)},
            )
        self.waiting += 1
        self.metrics.queue.set(self.waiting)
        start = time.perf_counter()
        try:
            await asyncio.wait_for(self.semaphore.acquire(), timeout)
        except TimeoutError:
            raise APIError(
                408, f"the request waited {timeout:.0f} s for a generation slot (--timeout)", type="timeout_error", code="timeout"
            ) from None
        finally:
            self.waiting -= 1
            self.metrics.queue.set(self.waiting)
        self.metrics.queue_wait.observe(time.perf_counter() - start)
        self.running += 1
        self.metrics.running.set(self.running)

    def release(self, duration: float | None) -> None:
        """``duration`` None: the request ended before generating (its preparation failed)."""
        self.running -= 1
        self.metrics.running.set(self.running)
        if duration is not None:
            self.mean_duration = 0.8 * self.mean_duration + 0.2 * duration
        self.semaphore.release()


class Job:
    """One generation in the worker process; its tokens, decoded here, handed to the event loop."""

    def __init__(self, engine: Engine, prepared: Prepared, slots: Slots, metrics: Metrics):
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.abandoned = False  # the client is gone (disconnect, timeout): nobody reads the answer
        self.engine, self.prepared, self.slots, self.metrics = engine, prepared, slots, metrics
        self.text = Detokenizer(engine.processor.tokenizer)
        self.tokens: list[int] = []
        self.started = time.perf_counter()
        self.worker = engine.worker  # the one running it (a restarted worker is another)
        self.id = self.worker.start(prepared.arrays, prepared.search, self._on_message, prepared.guidance)

    def stop(self) -> None:
        """Ends the generation at the next token (a stop string matched, the client left)."""
        self.worker.cancel(self.id)

    def abandon(self) -> None:
        self.abandoned = True
        self.stop()

    def _on_message(self, kind: str, message: FromWorker) -> None:
        """Runs on the worker reader thread."""
        item: Event
        if isinstance(message, Token):
            self.tokens.append(message.token)
            item = TokenText(message.token, self.text.add(message.token))
        elif isinstance(message, Done):
            if message.cancelled:
                finish = "cancelled"
            else:
                finish = "stop" if self.tokens and self.tokens[-1] in self.engine.eos else "length"
            outcome = Outcome(finish, message.prefill_s, message.decode_s)
            if finish == "cancelled" and self.abandoned:  # nobody reads the answer: count it here
                self.metrics.record_generation(
                    len(self.prepared.prompt_ids), len(self.tokens), "cancelled", message.prefill_s, message.decode_s
                )
            item = Finished(outcome, self.text.flush())
        else:
            log.error("generation failed: %s", message.message)
            item = Failed(message.message)
        try:
            if not isinstance(message, Token):  # the generation has ended: its slot is free
                self.loop.call_soon_threadsafe(self.slots.release, time.perf_counter() - self.started)
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the event loop has closed (shutdown): nobody is listening
            pass

    async def next(self, deadline: float) -> Event:
        remaining = deadline - time.monotonic()
        try:
            return await asyncio.wait_for(self.queue.get(), max(remaining, 0.001))
        except TimeoutError:
            self.abandon()
            raise
