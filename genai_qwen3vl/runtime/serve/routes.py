"""The routes: thin handlers on an APIRouter, each getting the server's typed state
(``state.py``); reading and checking the request is ``protocol.py``'s, admission the scheduler's,
the answer chat serving's.

    POST /v1/chat/completions --> auth --> body (413 over --max-request-bytes; strict JSON)
        --> ChatCompletionRequest (400) --> model (404) --> engine ready (503) --> counts (400)
        --> structured output compiled (400) --> slot (429/408) --> prepare in a thread (400/408/499) --> Job --> ChatServing
"""

from __future__ import annotations

import asyncio
import hmac
import threading
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse

from .. import budget
from .errors import APIError, bad_request, quote
from .protocol import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ErrorResponse, Health, ModelCard, ModelList, strict_json
from .scheduler import Job
from .serving import ChatServing
from .state import ServerState, serve_state, worker_restarting

STATIC = Path(__file__).with_name("static")
State = Annotated[ServerState, Depends(serve_state)]


def authorize(state: State, request: Request) -> None:
    """``Authorization: Bearer KEY`` when the server has --api-key (401 otherwise)."""
    if state.options.api_key is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key:
        raise APIError(401, "missing API key: send 'Authorization: Bearer KEY'", code="invalid_api_key")
    if not hmac.compare_digest(key.strip().encode(), state.options.api_key.encode()):
        raise APIError(401, "incorrect API key", code="invalid_api_key")


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorResponse} for status in statuses}


router = APIRouter()
api = APIRouter(dependencies=[Depends(authorize)], responses=_errors(401))


@router.get("/health", response_model=Health, responses={503: {"model": Health, "description": "loading, restarting or failed"}})
async def health(state: State):
    if state.engine is None:
        return JSONResponse({"status": "error" if state.error else "loading", "detail": state.error}, status_code=503)
    if state.restarting:
        return JSONResponse(
            {"status": "restarting", "detail": "the generation worker died; a new one is loading the model"},
            status_code=503,
            headers={"Retry-After": "2"},
        )
    body = {"status": "ok", "model": state.options.name, "running": state.slots.running, "waiting": state.slots.waiting}
    if state.replica:
        body["replica"] = state.replica
    return JSONResponse(body)


@api.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}, "description": "Prometheus metrics"}})
async def prometheus(state: State):
    return Response(state.metrics.render(), media_type=state.metrics.content_type)


def _model_card(state: ServerState) -> dict:
    card = {"id": state.options.name, "object": "model", "created": int(time.time()), "owned_by": "genai-qwen3vl"}
    if state.engine is not None:
        card["max_model_len"] = state.engine.context
    return card


@api.get("/v1/models", response_model=ModelList)
async def models(state: State):
    return JSONResponse({"object": "list", "data": [_model_card(state)]})


@api.get("/v1/models/{name:path}", response_model=ModelCard, responses=_errors(404))
async def model(name: str, state: State):
    if name != state.options.name:
        raise APIError(
            404, f"the model {quote(name)} does not exist; this server serves '{state.options.name}'", param="model", code="model_not_found"
        )
    return JSONResponse(_model_card(state))


CHAT_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletionRequest"}}},
    }
}
CHAT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": ChatCompletion,
        "description": "the answer; with stream: true, server-sent events of ChatCompletionChunk, then data: [DONE]",
        "content": {"text/event-stream": {"schema": {"$ref": "#/components/schemas/ChatCompletionChunk"}}},
    },
    **_errors(400, 403, 404, 408, 413, 429, 499, 500, 503),
}
REQUEST_MODELS = (ChatCompletionRequest, ChatCompletionChunk)  # in the schema's components, beside the response models


@api.post("/v1/chat/completions", response_model=ChatCompletion, openapi_extra=CHAT_BODY, responses=CHAT_RESPONSES)
async def chat_completions(request: Request, state: State):
    options = state.options
    deadline = time.monotonic() + options.timeout
    body = await read_json(request, options.max_request_bytes)
    chat = ChatCompletionRequest.parse(body).to_chat_request(xml_tool_calls=state.xml_tool_calls)
    if chat.model not in (None, options.name):
        raise APIError(
            404,
            f"the model {quote(chat.model)} does not exist; this server serves '{options.name}' (GET /v1/models)",
            param="model",
            code="model_not_found",
        )
    engine = state.ready_engine()
    processor = engine.check(chat, options.limit_images, options.limit_videos)  # the free 400s, before the queue
    if chat.constraint is not None:  # compiled and checked (cached by its text), before the queue
        await asyncio.to_thread(engine.check_constraint, chat)
    slots = state.slots
    await slots.acquire(max(deadline - time.monotonic(), 0.001))  # admitted (or 429/408) before any decoding
    work = budget.Budget(deadline)
    watcher = asyncio.create_task(_cancel_on_disconnect(request, work.cancel.set))
    try:
        prepared = await _in_daemon_thread(work.cancel.set, engine.prepare, chat, processor, state.media, options.max_request_pixels, work)
        try:
            job = Job(state.ready_engine(), prepared, slots, state.metrics)
        except (OSError, ValueError):  # the worker's pipe is gone (the worker died)
            raise worker_restarting() from None
    except BaseException:  # refused, stopped or failed before generating: the slot goes back
        slots.release(None)
        raise
    finally:
        watcher.cancel()
    serving = ChatServing(job, chat, prepared, options.name, deadline, state.metrics)
    if chat.stream:
        return StreamingResponse(
            serving.stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
    watcher = asyncio.create_task(_cancel_on_disconnect(request, job.abandon))
    try:
        return JSONResponse(await serving.complete())
    finally:
        watcher.cancel()
        job.abandon()


@router.get("/", include_in_schema=False)
async def page():
    return FileResponse(STATIC / "index.html", media_type="text/html")


router.include_router(api)


async def read_json(request: Request, limit: int) -> Any:
    """The body, at most ``limit`` bytes (413 beyond, before reading it when Content-Length says
    so), parsed by ``strict_json`` (400 naming the problem)."""
    length = request.headers.get("content-length")
    too_large = APIError(
        413, f"the request body is larger than {limit} bytes (--max-request-bytes); send smaller images", code="request_too_large"
    )
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


async def _cancel_on_disconnect(request: Request, cancel) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            cancel()
            return


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
