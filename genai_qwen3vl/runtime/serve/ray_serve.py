"""The server's app as a Ray Serve deployment: ``genai-qwen3vl serve OUT_DIR --ray-replicas N``.

Each replica is the whole server of ``create_app`` (its own og worker process, slots, queue and
metrics) behind Ray Serve's HTTP proxy, which spreads requests over the replicas that have room
(``max_ongoing_requests`` = --max-concurrency + --max-queue) and replaces a replica that dies or
fails its health check (``check_health``: a worker that keeps dying). A replica takes requests
once its model has loaded. ``/health`` and ``/metrics`` answer for the replica that took the
request, and every answer names it in the ``X-Replica`` header.

    genai-qwen3vl serve qwen3vl-2b-int4 --ray-replicas 2                  # a local Ray cluster
    genai-qwen3vl serve /shared/qwen3vl-2b-int4 --ray HEAD:6379 --ray-replicas 1:8 \\
        --ray-autoscaling '{"target_ongoing_requests": 2, "downscale_delay_s": 300}'

The same deployment from a Ray Serve config file (``serve deploy`` / ``serve run``), whose args
are the serve command's flags without their dashes (docs/serve.md shows one):

    serve run genai_qwen3vl.runtime.serve.ray_serve:app_builder model_dir=/shared/qwen3vl-2b-int4 max_concurrency=2

Needs the ray extra (``pip install 'genai-qwen3vl[ray]'``); imported only when asked for.
"""

from __future__ import annotations

import json
import logging
import signal
import threading

from ray import serve
from ray.serve.config import AutoscalingConfig, HTTPOptions

from ...errors import ClusterError, ServerError
from ..ray_cluster import connect
from .app import create_app
from .deadlines import BodyDeadline
from .options import ServeOptions

APP_NAME = "genai-qwen3vl"
DEPLOYMENT = "Qwen3VLServer"
REPLICA_HEADER = "x-replica"
log = logging.getLogger("genai_qwen3vl.serve")


class ReplicaHeader:
    """ASGI middleware: every answer names the replica that gave it."""

    def __init__(self, app, replica: str):
        self.app, self.header = app, (REPLICA_HEADER.encode(), replica.encode())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def named_send(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        return await self.app(scope, receive, named_send)


@serve.deployment(name=DEPLOYMENT)
@serve.ingress()
class Qwen3VLServer:
    """One replica: the server's app, built in the replica (the model loads before it takes requests)."""

    def __init__(self, options: ServeOptions):
        self.options = options
        self.state = None

    def __serve_build_asgi_app__(self):
        app = create_app(self.options, load_first=True)
        self.state = app.state.serve
        self.state.replica = serve.get_replica_context().replica_id.unique_id
        app.add_middleware(BodyDeadline, timeout=self.options.body_timeout)
        app.add_middleware(ReplicaHeader, replica=self.state.replica)
        return app

    def check_health(self) -> None:
        """Ray Serve asks every few seconds; an error has the replica replaced."""
        if self.state is not None and self.state.error:
            raise RuntimeError(self.state.error)


def parse_replicas(text: str) -> tuple[int, int]:
    """``N`` (a fixed count) or ``MIN:MAX`` (autoscaling) as (min, max); a ServerError otherwise."""
    low, sep, high = text.partition(":")
    try:
        bounds = (int(low), int(high) if sep else int(low))
    except ValueError:
        raise ServerError(f"{text!r} is not N or MIN:MAX") from None
    if bounds[0] < (0 if sep else 1) or bounds[1] < max(1, bounds[0]):
        raise ServerError(f"{text!r}: give N >= 1, or MIN:MAX with 0 <= MIN <= MAX and MAX >= 1")
    return bounds


def autoscaling_fields(text: str | None) -> dict:
    """``--ray-autoscaling``'s JSON object of Ray Serve's AutoscalingConfig fields, checked here."""
    if not text:
        return {}
    try:
        fields = json.loads(text)
    except json.JSONDecodeError as exc:
        example = '{"target_ongoing_requests": 2}'
        raise ServerError(f"--ray-autoscaling is not JSON ({exc.msg}); give an object such as '{example}'") from None
    known = set(AutoscalingConfig.model_fields) - {"min_replicas", "max_replicas", "policy"}
    if not isinstance(fields, dict) or set(fields) - known:
        unknown = sorted(set(fields) - known) if isinstance(fields, dict) else "not an object"
        raise ServerError(f"--ray-autoscaling: {unknown}; give a JSON object of Ray Serve's autoscaling fields: {', '.join(sorted(known))}")
    return fields


def application(options: ServeOptions, replicas: tuple[int, int], autoscaling: dict, cpus: float):
    """The bound deployment: ``replicas`` fixed when min == max (and no autoscaling fields), else
    autoscaled between them, ``target_ongoing_requests`` defaulting to --max-concurrency."""
    config: dict = {
        "max_ongoing_requests": options.max_concurrency + options.max_queue,
        "ray_actor_options": {"num_cpus": cpus},
        "graceful_shutdown_timeout_s": options.timeout + 1,
        "health_check_period_s": 5,
    }
    low, high = replicas
    if low == high and not autoscaling:
        config["num_replicas"] = low
    else:
        fields = {"min_replicas": low, "max_replicas": high, "target_ongoing_requests": options.max_concurrency, **autoscaling}
        try:
            config["autoscaling_config"] = AutoscalingConfig(**fields).model_dump(exclude_unset=True)
        except ValueError as exc:  # pydantic's ValidationError
            raise ServerError(f"--ray-autoscaling: {' '.join(str(exc).split())[:300]}") from None
    return Qwen3VLServer.options(**config).bind(options)


def app_builder(args: dict):
    """For Ray Serve config files and ``serve run``: the serve command's flags as args
    (``model_dir``, ``max_concurrency``, ``ray_replicas``, ``ray_cpus_per_replica`` ...)."""
    from .engine import check_model_dir
    from .main import build_parser, options_of

    argv = [str(args.get("model_dir", ""))]
    for key, value in args.items():
        if key != "model_dir":
            argv += [f"--{key.replace('_', '-')}", str(value)]
    try:
        parsed = build_parser("app_builder").parse_args(argv)
    except SystemExit:  # argparse printed what is wrong
        raise ServerError(f"app_builder: the args {sorted(args)} are not the serve command's flags (see the line above)") from None
    check_model_dir(parsed.model_dir)
    options = options_of(parsed)
    cpus = parsed.ray_cpus_per_replica
    options = _with_threads(options, cpus)
    return application(options, parse_replicas(parsed.ray_replicas or "1"), autoscaling_fields(parsed.ray_autoscaling), cpus)


def _with_threads(options: ServeOptions, cpus: float) -> ServeOptions:
    import dataclasses

    return options if options.threads else dataclasses.replace(options, threads=max(1, int(cpus)))


def run(options: ServeOptions, address: str | None, replicas: tuple[int, int], autoscaling: dict, cpus: float) -> int:
    """Deploys on the cluster at ``address`` ("local": a new one of this command's own, "auto":
    the one ``ray start`` runs here), serves until SIGINT/SIGTERM, then deletes the deployment
    (and stops the local cluster it started)."""
    import ray

    started_here = address == "local" and not ray.is_initialized()
    options = _with_threads(options, cpus)
    app = application(options, replicas, autoscaling, cpus)
    try:
        node_cpus = connect(address, "--ray-replicas", own_signals=started_here)
    except ClusterError as exc:
        raise ServerError(str(exc)) from None
    largest = max(node_cpus, default=0)
    if cpus > largest:
        raise ServerError(f"--ray-cpus-per-replica {cpus:g}: no node of the cluster has that many CPUs (the largest has {largest})")
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        serve.start(
            http_options=HTTPOptions(host=options.host, port=options.port, keep_alive_timeout_s=int(options.keep_alive_timeout) or 1)
        )
        try:
            serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
        except RuntimeError as exc:  # Ray's deploy failed: the replicas' start-up error, several layers deep
            raise ServerError(f"Ray Serve cannot start the replicas: {_root_cause(exc)}") from None
        host = f"[{options.host}]" if ":" in options.host else options.host
        how = f"{replicas[0]}" if replicas[0] == replicas[1] and not autoscaling else f"{replicas[0]} to {replicas[1]} (autoscaling)"
        log.info("listening on http://%s:%d with %s Ray Serve replica(s) of %s", host, options.port, how, options.model_dir)
        while not stop.wait(1.0):
            pass
        log.info("stopping: deleting the deployment")
        # Ray's delete waits forever for a controller that is gone (a cluster lost meanwhile; a
        # local one of ours holds SIGTERM, see connect): bounded, past the replicas' own graceful
        # shutdown.
        wait = options.timeout + 10
        if not _bounded(lambda: serve.delete(APP_NAME), wait):
            log.warning("the deployment did not confirm its deletion in %ds (the cluster's processes stopped first)", int(wait))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if started_here:
            _bounded(serve.shutdown, 15)
            ray.shutdown()
    return 0


def _bounded(call, seconds: float) -> bool:
    """Runs ``call`` in a daemon thread for at most ``seconds``; whether it finished."""
    thread = threading.Thread(target=call, daemon=True, name="ray-serve-stop")
    thread.start()
    thread.join(seconds)
    return not thread.is_alive()


def _root_cause(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    for marker in ("RuntimeError: ", "ValueError: ", "FolderError: "):
        if marker in text:
            text = text[text.rindex(marker) + len(marker) :]
    return text[:400]
