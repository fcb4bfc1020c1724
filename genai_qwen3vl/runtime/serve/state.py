"""What the routes share: the options, the engine (loaded in the background, restarted when its
worker dies), the slots, the metrics and the media policy, as one typed object on
``app.state.serve`` that handlers get through ``serve_state``.

The worker process is supervised: when it dies, the generations in it end with an error, the
server answers 503 (Retry-After) while a new worker loads the model, and
genai_qwen3vl_worker_restarts_total counts it; a worker that dies more than MAX_RESTARTS times in
RESTART_WINDOW seconds, or cannot load again, ends the server (``on_fatal``; exit 2).
"""

from __future__ import annotations

import collections
import logging
import time
from pathlib import Path
from typing import Callable

from fastapi import Request

from ..chat_template import find_chat_template, xml_tool_calls
from .engine import Engine
from .errors import APIError
from .media import MediaPolicy
from .metrics import Metrics
from .options import ServeOptions
from .scheduler import Slots

log = logging.getLogger("genai_qwen3vl.serve")
MAX_RESTARTS = 5  # worker deaths tolerated within RESTART_WINDOW seconds; one more ends the server
RESTART_WINDOW = 600.0


def worker_restarting() -> APIError:
    return APIError(
        503,
        "the generation worker is restarting (it died); retry shortly",
        type="server_error",
        code="worker_restarting",
        headers={"Retry-After": "2"},
    )


class ServerState:
    def __init__(self, options: ServeOptions, on_fatal: Callable[[str], None] | None = None):
        self.options = options
        self.metrics = Metrics()
        self.media = MediaPolicy(options.allowed_media_dir, options.max_decode_pixels)
        self.on_fatal = on_fatal
        self.engine: Engine | None = None
        self.error: str | None = None  # why the model cannot be served (the server is ending)
        self.slots: Slots | None = None  # made in the server's event loop (lifespan)
        self.restarting = False
        self.stopping = False
        self.deaths: collections.deque[float] = collections.deque()
        self.replica: str | None = None  # a Ray Serve replica's id (serve --ray-replicas)
        # the checkpoint's tool-call layout, for constraints on calls (Qwen3.5: XML, Qwen3-VL: JSON)
        self.xml_tool_calls = _xml_tool_calls(options.model_dir)

    def fail(self, message: str) -> None:
        self.engine, self.error = None, message
        if self.on_fatal:
            self.on_fatal(message)

    def load(self) -> None:
        """Loads the model (on a background thread at startup); a folder og cannot load ends the server."""
        options = self.options
        try:
            engine = Engine(options.model_dir, options.max_model_len, options.min_image_pixels, options.max_image_pixels, options.threads)
            engine.worker.on_death = self.on_worker_death
            self.engine = engine
            log.info("loaded %s as %r; serving", options.model_dir, options.name)
        except (APIError, ValueError, RuntimeError, OSError) as exc:  # og raises RuntimeError for folders it cannot load
            message = exc.message if isinstance(exc, APIError) else str(exc)
            log.error("cannot serve %s: %s", options.model_dir, message)
            self.fail(message)

    def on_worker_death(self, message: str) -> None:
        """Runs on the dead worker's reader thread (its generations have had their error): a new
        worker, unless the old one keeps dying or the model no longer loads."""
        if self.stopping:
            return
        now = time.monotonic()
        self.deaths.append(now)
        while self.deaths and self.deaths[0] < now - RESTART_WINDOW:
            self.deaths.popleft()
        if len(self.deaths) > MAX_RESTARTS:
            self.fail(f"{message}, {len(self.deaths)} times in {RESTART_WINDOW:.0f} s; not restarting it again")
            return
        self.restarting = True
        log.error("%s; restarting it (%d of %d restarts in %.0f s)", message, len(self.deaths), MAX_RESTARTS, RESTART_WINDOW)
        try:
            self.engine.restart_worker(stopping=lambda: self.stopping)
        except ValueError as exc:
            self.fail(f"{message}, and a new one cannot load the model: {exc}")
            return
        except Exception as exc:  # noqa: BLE001 - on this reader thread nothing else sees it (OSError from Pipe/spawn after an OOM kill): end the server, not 503 forever
            self.fail(f"{message}, and a new one cannot be started: {type(exc).__name__}: {exc}")
            return
        self.metrics.worker_restarts.inc()
        self.restarting = False
        log.info("the generation worker is serving again")

    def stop(self) -> None:
        """The requests in flight have drained: stop the worker."""
        self.stopping = True
        if self.engine is not None:
            self.engine.worker.close()

    def ready_engine(self) -> Engine:
        """The engine, or 503 (Retry-After) while it loads or its worker restarts."""
        if self.engine is None:
            message = self.error or "the model is still loading; retry shortly (GET /health says when it is ready)"
            raise APIError(503, message, type="server_error", code="model_not_ready", headers={"Retry-After": "2"})
        if self.restarting:
            raise worker_restarting()
        return self.engine


def _xml_tool_calls(model_dir) -> bool:
    try:
        return xml_tool_calls(find_chat_template(Path(model_dir)))
    except (OSError, ValueError):  # no readable template: the engine's load says so
        return False


def serve_state(request: Request) -> ServerState:
    """The server's state, for a handler (``Depends(serve_state)``)."""
    return request.app.state.serve
