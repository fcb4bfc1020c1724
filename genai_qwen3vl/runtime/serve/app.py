"""The app: the routes (``routes.py``) with the server's state, errors in OpenAI's shape, the
status counter, the chat page, and the OpenAPI schema at ``/openapi.json``.

    request --> read body (413 over --max-request-bytes) --> parse, counts (400) --> slot (wait in
            the queue, 429 when the queue is full, 408 past --timeout) --> prepare in a thread
            (template, media headers against --max-request-pixels, decoding, processor, length:
            400; stopped by --timeout and a disconnect) --> og Generator in the worker process
            (worker.py) --> tokens, decoded here --> stop strings / reasoning / tool calls -->
            JSON or server-sent events

The roles, as vLLM's entrypoints and llama.cpp's server split them:

    options.py    ServeOptions: every flag's default, once
    state.py      the typed state handlers get: engine (loaded in the background, its worker
                  supervised and restarted), slots, metrics, media policy
    routes.py     the APIRouter: thin handlers
    protocol.py   the request and response bodies as pydantic models; strict JSON
    scheduler.py  slots and the queue, jobs; messages.py: the typed worker messages
    serving.py    answer assembly, the whole and the streamed (server-sent events) answers
    detokenizer.py, output.py   token ids to text; stop strings, reasoning, tool calls

Nothing is decoded before the request holds a slot, so --max-concurrency bounds the memory of
preparation too, and a full queue answers 429 at once.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from .errors import APIError, bad_request
from .metrics import Metrics
from .options import ServeOptions
from .routes import REQUEST_MODELS, STATIC, router
from .scheduler import Slots
from .state import MAX_RESTARTS, RESTART_WINDOW, ServerState

__all__ = ["MAX_RESTARTS", "RESTART_WINDOW", "ServeOptions", "create_app"]
log = logging.getLogger("genai_qwen3vl.serve")
COUNTED_PATHS = ("/v1/chat/completions", "/v1/models", "/health", "/metrics", "/")


class StatusCounter:
    """ASGI middleware counting responses by path and status for /metrics (streams untouched)."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"] if scope["path"] in COUNTED_PATHS else "other"

        async def counting_send(message):
            if message["type"] == "http.response.start":
                self.metrics.requests.labels(path, str(message["status"])).inc()
            await send(message)

        return await self.app(scope, receive, counting_send)


def create_app(options: ServeOptions, on_fatal=None, load_first: bool = False) -> FastAPI:
    """The app; the model loads in a background thread once the server starts (``/health``
    answers 503 until then), or, with ``load_first`` (a Ray Serve replica, which takes requests
    once its start-up returns), before start-up ends, a RuntimeError if it cannot.
    ``on_fatal(message)``: the model cannot be served (any more)."""
    state = ServerState(options, on_fatal)

    async def lifespan(app: FastAPI):
        state.slots = Slots(options.max_concurrency, options.max_queue, state.metrics)
        loader = threading.Thread(target=state.load, name="load-model", daemon=True)
        loader.start()
        if load_first:
            await asyncio.to_thread(loader.join)
            if state.engine is None:
                raise RuntimeError(f"cannot serve {options.model_dir}: {state.error}")
        yield
        loader.join()
        state.stop()

    app = FastAPI(
        title="genai-qwen3vl",
        summary="An OpenAI-compatible server for Qwen3-VL exports run by onnxruntime-genai",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.add_middleware(StatusCounter, metrics=state.metrics)
    app.state.serve = state

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        message = {404: f"no route {request.url.path}", 405: f"{request.method} is not allowed on {request.url.path}"}
        return JSONResponse(
            APIError(exc.status_code, message.get(exc.status_code, str(exc.detail))).body(),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_parameter(request: Request, exc: RequestValidationError):
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error.get("loc", ()))
        return JSONResponse(bad_request(f"{where}: {error.get('msg')}", where or None).body(), status_code=400)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        log.error("internal error on %s: %s: %s", request.url.path, type(exc).__name__, exc)
        body = APIError(500, f"internal server error ({type(exc).__name__}); the server log has the details", type="server_error")
        return JSONResponse(body.body(), status_code=500)

    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def openapi() -> dict:
        """FastAPI's schema, plus the bodies the chat route reads itself (strictly, within
        --max-request-bytes) rather than through a body parameter."""
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for path in schema["paths"].values():  # path parameters are plain strings: no 422 is ever answered
                for operation in path.values():
                    operation.get("responses", {}).pop("422", None)
            for unused in ("HTTPValidationError", "ValidationError"):
                components.pop(unused, None)
            for model in REQUEST_MODELS:
                body = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(body.pop("$defs", {}))
                components[model.__name__] = body
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    return app
