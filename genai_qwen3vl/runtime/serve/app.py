"""The HTTP side: FastAPI routes in OpenAI's shapes, generation slots and the queue, auth, limits.

    request --> read body (413 over --max-request-bytes) --> parse, counts (400) --> slot (wait in
            the queue, 429 when the queue is full, 408 past --timeout) --> prepare in a thread
            (template, media headers against --max-request-pixels, decoding, processor, length:
            400; stopped by --timeout and a disconnect) --> og Generator in the worker process
            (worker.py) --> tokens, decoded here --> stop strings / reasoning / tool calls -->
            JSON or server-sent events

Nothing is decoded before the request holds a slot, so --max-concurrency bounds the memory of
preparation too, and a full queue answers 429 at once. The worker process is supervised: when it
dies, the generations in it end with an error, the server answers 503 (Retry-After) while a new
worker loads the model, and genai_qwen3vl_worker_restarts_total counts it; a worker that dies more
than MAX_RESTARTS times in RESTART_WINDOW seconds, or cannot load again, ends the server (exit 2).

The generation slot is freed when the worker reports the generation over: after the last token,
or within one token of a client disconnecting, a stop string matching, or the timeout passing.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hmac
import json
import logging
import math
import threading
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import budget
from .engine import Detokenizer, Engine, Outcome, Prepared
from .errors import APIError, bad_request, quote
from .media import MediaPolicy
from .metrics import Metrics
from .output import OutputSplitter, StopFilter
from .protocol import ChatRequest, parse_chat_request, strict_json

log = logging.getLogger("genai_qwen3vl.serve")
STATIC = Path(__file__).with_name("static")
MAX_RESTARTS = 5  # worker deaths tolerated within RESTART_WINDOW seconds; one more ends the server
RESTART_WINDOW = 600.0


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    model_dir: Path
    model_name: str | None = None
    api_key: str | None = None
    max_concurrency: int = 1
    max_queue: int = 16
    allowed_media_dir: Path | None = None
    min_image_pixels: int | None = None
    max_image_pixels: int | None = None
    timeout: float = 600.0
    max_model_len: int | None = None
    max_request_bytes: int = 64 * 1024 * 1024
    max_decode_pixels: int = 8192 * 8192
    max_request_pixels: int = 8192 * 8192
    limit_images: int = 16
    limit_videos: int = 2

    @property
    def name(self) -> str:
        return self.model_name or self.model_dir.resolve().name


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
            raise APIError(408, f"the request waited {timeout:.0f} s for a generation slot (--timeout)", type="timeout_error",
                           code="timeout") from None
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
        self.queue: asyncio.Queue = asyncio.Queue()
        self.abandoned = False  # the client is gone (disconnect, timeout): nobody reads the answer
        self.engine, self.prepared, self.slots, self.metrics = engine, prepared, slots, metrics
        self.text = Detokenizer(engine.processor.tokenizer)
        self.tokens: list[int] = []
        self.started = time.perf_counter()
        self.worker = engine.worker  # the one running it (a restarted worker is another)
        self.id = self.worker.start(prepared.arrays, prepared.search, self._on_message)

    def stop(self) -> None:
        """Ends the generation at the next token (a stop string matched, the client left)."""
        self.worker.cancel(self.id)

    def abandon(self) -> None:
        self.abandoned = True
        self.stop()

    def _on_message(self, kind: str, payload: tuple) -> None:
        """Runs on the worker reader thread."""
        if kind == "token":
            self.tokens.append(payload[0])
            item = ("token", payload[0], self.text.add(payload[0]))
        elif kind == "done":
            finish, first_s, decode_s = payload
            if finish is None:
                finish = "stop" if self.tokens and self.tokens[-1] in self.engine.eos else "length"
            outcome = Outcome(finish, first_s, decode_s)
            if finish == "cancelled" and self.abandoned:  # nobody reads the answer: count it here
                self.metrics.record_generation(len(self.prepared.prompt_ids), len(self.tokens), "cancelled", first_s, decode_s)
            item = ("done", outcome, self.text.flush())
        else:
            log.error("generation failed: %s", payload[0])
            item = ("error", RuntimeError(payload[0]))
        try:
            if kind != "token":  # the generation has ended: its slot is free
                self.loop.call_soon_threadsafe(self.slots.release, time.perf_counter() - self.started)
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the event loop has closed (shutdown): nobody is listening
            pass

    async def next(self, deadline: float):
        remaining = deadline - time.monotonic()
        try:
            return await asyncio.wait_for(self.queue.get(), max(remaining, 0.001))
        except TimeoutError:
            self.abandon()
            raise


class Answer:
    """Turns the token stream of one job into OpenAI's message or chunks."""

    def __init__(self, request: ChatRequest, prepared: Prepared):
        self.stop = StopFilter(request.sampling.stop)
        self.split = OutputSplitter(prepared.opened_think, request.parse_tools)
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.calls: list[dict] = []
        self.tokens: list[int] = []
        self.outcome: Outcome | None = None

    def feed(self, token: int, text: str) -> list[tuple[str, Any]]:
        if self.stop.stopped:  # tokens the worker made before it saw the stop are not the answer's
            return []
        self.tokens.append(token)
        return self._keep(self.split.feed(self.stop.feed(text)))

    def finish(self, outcome: Outcome, tail: str) -> list[tuple[str, Any]]:
        """``tail``: text the detokenizer held until the end (an incomplete character)."""
        self.outcome = outcome
        events = [] if self.stop.stopped else self.split.feed(self.stop.feed(tail))
        return self._keep(events + self.split.feed(self.stop.finish()) + self.split.finish())

    def _keep(self, events):
        out = []
        for kind, value in events:
            if kind == "tool_call":
                value = {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function", "function": value}
                self.calls.append(value)
            (self.content if kind == "content" else self.reasoning if kind == "reasoning" else []).append(value)
            out.append((kind, value))
        return out

    @property
    def finish_reason(self) -> str:
        reason = "stop" if self.stop.stopped else self.outcome.finish
        return "tool_calls" if self.calls and reason == "stop" else reason

    def usage(self, prompt_tokens: int) -> dict:
        return {"prompt_tokens": prompt_tokens, "completion_tokens": len(self.tokens), "total_tokens": prompt_tokens + len(self.tokens)}

    def message(self) -> dict:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.content) if self.content or not self.calls else None}
        if self.reasoning:
            message["reasoning_content"] = "".join(self.reasoning)
        if self.calls:
            message["tool_calls"] = self.calls
        return message


def delta_of(kind: str, value: Any, call_index: int) -> dict:
    if kind == "content":
        return {"content": value}
    if kind == "reasoning":
        return {"reasoning_content": value}
    return {"tool_calls": [{"index": call_index, **value}]}


async def read_json(request: Request, limit: int) -> Any:
    length = request.headers.get("content-length")
    too_large = APIError(413, f"the request body is larger than {limit} bytes (--max-request-bytes); send smaller images",
                         code="request_too_large")
    if length is not None and length.isdigit() and int(length) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    try:
        return strict_json(b"".join(chunks))
    except ValueError as exc:  # strict: no NaN/Infinity, lone surrogates, 200+ levels or 4300+ digits
        raise bad_request(f"the request body is not valid JSON ({exc})") from None


class StatusCounter:
    """ASGI middleware counting responses by path and status for /metrics (streams untouched)."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"] if scope["path"] in ("/v1/chat/completions", "/v1/models", "/health", "/metrics", "/") else "other"

        async def counting_send(message):
            if message["type"] == "http.response.start":
                self.metrics.requests.labels(path, str(message["status"])).inc()
            await send(message)

        return await self.app(scope, receive, counting_send)


def create_app(options: ServeOptions, on_fatal=None) -> FastAPI:
    """The app; the model loads in a background thread once the server starts (``/health``
    answers 503 until then)."""
    metrics = Metrics()
    media = MediaPolicy(options.allowed_media_dir, options.max_decode_pixels)
    state: dict[str, Any] = {"engine": None, "error": None, "slots": None, "restarting": False, "stopping": False}
    deaths: collections.deque[float] = collections.deque()

    def fail(message: str) -> None:
        state["engine"], state["error"] = None, message
        if on_fatal:
            on_fatal(message)

    def on_worker_death(message: str) -> None:
        """Runs on the dead worker's reader thread (its generations have had their error): a new
        worker, unless the old one keeps dying or the model no longer loads."""
        if state["stopping"]:
            return
        now = time.monotonic()
        deaths.append(now)
        while deaths and deaths[0] < now - RESTART_WINDOW:
            deaths.popleft()
        if len(deaths) > MAX_RESTARTS:
            fail(f"{message}, {len(deaths)} times in {RESTART_WINDOW:.0f} s; not restarting it again")
            return
        state["restarting"] = True
        log.error("%s; restarting it (%d of %d restarts in %.0f s)", message, len(deaths), MAX_RESTARTS, RESTART_WINDOW)
        try:
            state["engine"].restart_worker(stopping=lambda: state["stopping"])
        except ValueError as exc:
            fail(f"{message}, and a new one cannot load the model: {exc}")
            return
        except Exception as exc:  # noqa: BLE001 - on this reader thread nothing else sees it (OSError from Pipe/spawn after an OOM kill): end the server, not 503 forever
            fail(f"{message}, and a new one cannot be started: {type(exc).__name__}: {exc}")
            return
        metrics.worker_restarts.inc()
        state["restarting"] = False
        log.info("the generation worker is serving again")

    def load() -> None:
        try:
            engine = Engine(options.model_dir, options.max_model_len, options.min_image_pixels, options.max_image_pixels)
            engine.worker.on_death = on_worker_death
            state["engine"] = engine
            log.info("loaded %s as %r; serving", options.model_dir, options.name)
        except (APIError, ValueError, RuntimeError, OSError) as exc:  # og raises RuntimeError for folders it cannot load
            message = exc.message if isinstance(exc, APIError) else str(exc)
            log.error("cannot serve %s: %s", options.model_dir, message)
            fail(message)

    async def lifespan(app: FastAPI):
        state["slots"] = Slots(options.max_concurrency, options.max_queue, metrics)
        loader = threading.Thread(target=load, name="load-model", daemon=True)
        loader.start()
        yield
        loader.join()
        state["stopping"] = True
        if state["engine"] is not None:  # the requests in flight have drained: stop the worker
            state["engine"].worker.close()

    app = FastAPI(title="genai-qwen3vl", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.add_middleware(StatusCounter, metrics=metrics)
    app.state.serve = state

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        message = {404: f"no route {request.url.path}", 405: f"{request.method} is not allowed on {request.url.path}"}
        return JSONResponse(
            APIError(exc.status_code, message.get(exc.status_code, str(exc.detail))).body(), status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        log.error("internal error on %s: %s: %s", request.url.path, type(exc).__name__, exc)
        body = APIError(500, f"internal server error ({type(exc).__name__}); the server log has the details", type="server_error")
        return JSONResponse(body.body(), status_code=500)

    def authorize(request: Request) -> None:
        if options.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key:
            raise APIError(401, "missing API key: send 'Authorization: Bearer KEY'", code="invalid_api_key")
        if not hmac.compare_digest(key.strip().encode(), options.api_key.encode()):
            raise APIError(401, "incorrect API key", code="invalid_api_key")

    def engine() -> Engine:
        if state["engine"] is None:
            message = state["error"] or "the model is still loading; retry shortly (GET /health says when it is ready)"
            raise APIError(503, message, type="server_error", code="model_not_ready", headers={"Retry-After": "2"})
        if state["restarting"]:
            raise worker_restarting()
        return state["engine"]

    def model_card() -> dict:
        card = {"id": options.name, "object": "model", "created": int(time.time()), "owned_by": "genai-qwen3vl"}
        if state["engine"] is not None:
            card["max_model_len"] = state["engine"].context
        return card

    @app.get("/health")
    async def health():
        if state["engine"] is None:
            return JSONResponse({"status": "error" if state["error"] else "loading", "detail": state["error"]}, status_code=503)
        if state["restarting"]:
            return JSONResponse(
                {"status": "restarting", "detail": "the generation worker died; a new one is loading the model"},
                status_code=503,
                headers={"Retry-After": "2"},
            )
        slots = state["slots"]
        return {"status": "ok", "model": options.name, "running": slots.running, "waiting": slots.waiting}

    @app.get("/metrics")
    async def prometheus(request: Request):
        authorize(request)
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.get("/v1/models")
    async def models(request: Request):
        authorize(request)
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{name:path}")
    async def model(name: str, request: Request):
        authorize(request)
        if name != options.name:
            raise APIError(404, f"the model {quote(name)} does not exist; this server serves '{options.name}'", param="model",
                           code="model_not_found")
        return model_card()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        authorize(request)
        deadline = time.monotonic() + options.timeout
        body = await read_json(request, options.max_request_bytes)
        chat = parse_chat_request(body)
        if chat.model not in (None, options.name):
            raise APIError(404, f"the model {quote(chat.model)} does not exist; this server serves '{options.name}' (GET /v1/models)",
                           param="model", code="model_not_found")
        eng = engine()
        processor = eng.check(chat, options.limit_images, options.limit_videos)  # the free 400s, before the queue
        slots = state["slots"]
        await slots.acquire(max(deadline - time.monotonic(), 0.001))  # admitted (or 429/408) before any decoding
        work = budget.Budget(deadline)
        watcher = asyncio.create_task(_cancel_on_disconnect(request, work.cancel.set))
        try:
            prepared = await _in_daemon_thread(
                work.cancel.set, eng.prepare, chat, processor, media, options.max_request_pixels, work
            )
            try:
                job = Job(engine(), prepared, slots, metrics)
            except (OSError, ValueError):  # the worker's pipe is gone (the worker died)
                raise worker_restarting() from None
        except BaseException:  # refused, stopped or failed before generating: the slot goes back
            slots.release(None)
            raise
        finally:
            watcher.cancel()
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if chat.stream:
            return StreamingResponse(
                _stream(job, chat, prepared, ident, created, options.name, deadline, metrics),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        watcher = asyncio.create_task(_cancel_on_disconnect(request, job.abandon))
        try:
            answer = Answer(chat, prepared)
            async for _ in _answer_events(job, answer, deadline):
                pass
        finally:
            watcher.cancel()
            job.abandon()
        _record(metrics, prepared, answer)
        choice = {"index": 0, "message": answer.message(), "logprobs": None, "finish_reason": answer.finish_reason}
        result = {
            "id": ident,
            "object": "chat.completion",
            "created": created,
            "model": options.name,
            "choices": [choice],
            "usage": answer.usage(len(prepared.prompt_ids)),
        }
        if chat.return_token_ids:
            choice["token_ids"] = answer.tokens
            result["prompt_token_ids"] = prepared.prompt_ids
        return result

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/")
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    return app


def _record(metrics: Metrics, prepared: Prepared, answer: Answer) -> None:
    outcome = answer.outcome
    metrics.record_generation(len(prepared.prompt_ids), len(answer.tokens), answer.finish_reason,
                              outcome.first_token_s if outcome else None, outcome.decode_s if outcome else 0.0)


async def _answer_events(job: Job, answer: Answer, deadline: float) -> AsyncIterator[tuple[int | None, list]]:
    """Runs a job to its end: per token (token, events), then (None, the closing events). A stop
    string ends the generation at the next token; APIError 408 past the deadline, 500 if og failed."""
    while True:
        try:
            item = await job.next(deadline)
        except TimeoutError:
            raise APIError(408, "the request ran past --timeout and was stopped", type="timeout_error", code="timeout") from None
        if item[0] == "token":
            yield item[1], answer.feed(item[1], item[2])
            if answer.stop.stopped:
                job.stop()
        elif item[0] == "done":
            yield None, answer.finish(item[1], item[2])
            return
        else:
            raise APIError(500, f"generation failed ({type(item[1]).__name__}); the server log has the details", type="server_error")


async def _cancel_on_disconnect(request: Request, cancel) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            cancel()
            return


def worker_restarting() -> APIError:
    return APIError(
        503,
        "the generation worker is restarting (it died); retry shortly",
        type="server_error",
        code="worker_restarting",
        headers={"Retry-After": "2"},
    )


async def _in_daemon_thread(cancel, function, *args):
    """``function(*args)`` in a daemon thread: interpreter exit never waits for it (anyio's worker
    threads are joined at exit, so a stuck preparation kept a stopped server alive); ``cancel()``
    when the awaiting request is cancelled (server shutdown)."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(result, error) -> None:
        if not future.done():
            future.set_exception(error) if error is not None else future.set_result(result)

    def run() -> None:
        try:
            result, error = function(*args), None
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting request
            result, error = None, exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the event loop has closed (shutdown): nobody is waiting
            pass

    threading.Thread(target=run, name="prepare", daemon=True).start()
    try:
        return await future
    except asyncio.CancelledError:
        cancel()
        raise


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


async def _stream(job: Job, chat: ChatRequest, prepared: Prepared, ident: str, created: int, name: str, deadline: float,
                  metrics: Metrics) -> AsyncIterator[str]:
    """Server-sent events as OpenAI streams them; a client that goes away cancels the job (the
    response is closed, ``finally`` runs) and frees its slot within one token."""
    answer = Answer(chat, prepared)

    def chunk(delta: dict, finish: str | None = None, token_ids: list[int] | None = None, **extra) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        if token_ids is not None:
            choice["token_ids"] = token_ids
        payload = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": name, "choices": [choice], **extra}
        if chat.include_usage:
            payload["usage"] = None
        return _sse(payload)

    def chunks(events, token_ids):
        out = []
        index = len(answer.calls) - sum(kind == "tool_call" for kind, _ in events)  # of this batch's first call
        for kind, value in events:
            out.append(chunk(delta_of(kind, value, index), token_ids=token_ids))
            index += kind == "tool_call"
            token_ids = [] if token_ids is not None else None
        if token_ids:  # a token whose text is held back still reports its id
            out.append(chunk({}, token_ids=token_ids))
        return out

    try:
        first = {"role": "assistant", "content": ""}
        if chat.return_token_ids:
            yield chunk(first, token_ids=[], prompt_token_ids=prepared.prompt_ids)
        else:
            yield chunk(first)
        try:
            async for token, events in _answer_events(job, answer, deadline):
                for text in chunks(events, [token] if chat.return_token_ids and token is not None else None):
                    yield text
        except APIError as error:  # past the deadline, or og failed: an error event ends the stream
            yield _sse(error.body())
            yield "data: [DONE]\n\n"
            return
        _record(metrics, prepared, answer)
        yield chunk({}, answer.finish_reason)
        if chat.include_usage:
            yield _sse({"id": ident, "object": "chat.completion.chunk", "created": created, "model": name, "choices": [],
                        "usage": answer.usage(len(prepared.prompt_ids))})
        yield "data: [DONE]\n\n"
    finally:
        job.abandon()
