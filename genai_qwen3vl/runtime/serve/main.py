"""``genai-qwen3vl serve OUT_DIR``: an exported folder as an OpenAI-compatible server.

    genai-qwen3vl serve qwen3vl-2b-int4 --port 8000
    curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
         -d '{"messages": [{"role": "user", "content": "Hello"}]}'

(also ``python -m genai_qwen3vl.serve``). Needs the serve extra: ``pip install "genai-qwen3vl[serve]"``.
Ctrl-C or SIGTERM stops taking connections, lets the requests in flight finish, then exits.
Exit codes: 0 stopped, 2 a problem with the options or the folder (one line on stderr), 3 the
address cannot be listened on (--host/--port in use or not this machine's; one line, before the
model loads).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import math
import os
import signal
import socket
import sys
from pathlib import Path

from ...errors import ServerError
from ..flags import positive as _positive
from .options import DEFAULTS as D
from .options import ServeOptions

DESCRIPTION = "Serve a folder written by builder_qwen3vl.py over an OpenAI-compatible API, with a chat page at /."
EPILOG = """endpoints:
  POST /v1/chat/completions   OpenAI's chat API: images (image_url) and videos (video_url) as data: URLs
                              or local paths under --allowed-media-dir; stream, tools, reasoning_content
  GET  /v1/models, /health, /metrics (Prometheus), / (a chat page)

examples:
  %(prog)s qwen3vl-2b-int4
  %(prog)s qwen3vl-2b-int4 --host 0.0.0.0 --port 8000 --api-key SECRET --max-concurrency 2
  %(prog)s qwen3vl-2b-int4 --allowed-media-dir ~/pictures        # also take local file paths from there"""

API_KEY_ENV = "GENAI_QWEN3VL_API_KEY"


def _size(n: int) -> str:
    return f"{n // 2**20} MiB" if n % 2**20 == 0 else f"{n} bytes"


def _square(n: int) -> str:
    side = math.isqrt(n)
    return f"{side}x{side}" if side * side == n else str(n)


def build_parser(prog: str = "genai-qwen3vl serve") -> argparse.ArgumentParser:
    # a one-line usage: a refused flag value is two lines (usage, error), not the usage of every flag
    p = argparse.ArgumentParser(
        prog=prog,
        usage="%(prog)s OUT_DIR [flags] (--help lists them)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model_dir", type=Path, metavar="OUT_DIR", help="folder written by builder_qwen3vl.py")
    p.add_argument("--host", default=D.host, help=f"address to listen on (default {D.host}: this machine only)")
    p.add_argument("--port", type=_positive(int, 0, 65535), default=D.port, help=f"port (default {D.port}; 0 picks a free one)")
    p.add_argument("--model-name", help="the model id clients send and /v1/models lists (default: the folder's name)")
    p.add_argument("--api-key", help=f"require 'Authorization: Bearer KEY' on /v1 and /metrics (or set {API_KEY_ENV})")
    p.add_argument(
        "--max-concurrency",
        type=_positive(int),
        default=D.max_concurrency,
        help=f"generations at once, each its own og Generator (default {D.max_concurrency})",
    )
    p.add_argument(
        "--max-queue",
        type=_positive(int, 0),
        default=D.max_queue,
        help=f"requests waiting for a slot; beyond them: 429 with Retry-After (default {D.max_queue})",
    )
    p.add_argument(
        "--timeout", type=_positive(float), default=D.timeout, help=f"seconds per request, queue included (default {D.timeout:g})"
    )
    p.add_argument(
        "--header-timeout",
        type=_positive(float),
        default=D.header_timeout,
        help="seconds a connection may take to send a request's headers, from its opening or its last answer "
        f"(default {D.header_timeout:g})",
    )
    p.add_argument(
        "--body-timeout",
        type=_positive(float),
        default=D.body_timeout,
        help=f"seconds a request's body may take to arrive after its headers; beyond: 408 (default {D.body_timeout:g})",
    )
    p.add_argument(
        "--keep-alive-timeout",
        type=_positive(float),
        default=D.keep_alive_timeout,
        help=f"seconds an idle connection stays open after an answer (default {D.keep_alive_timeout:g})",
    )
    p.add_argument("--allowed-media-dir", type=Path, help="local image/video paths are read only from under this folder (default: none)")
    p.add_argument("--min-image-pixels", type=_positive(int), help="default image pixel floor (default: the checkpoint's)")
    p.add_argument("--max-image-pixels", type=_positive(int), help="default image pixel budget (default: the checkpoint's)")
    p.add_argument("--max-model-len", type=_positive(int), help="prompt + answer tokens (default: genai_config.json's max_length)")
    p.add_argument("--max-length", dest="max_model_len", type=_positive(int), default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.add_argument(
        "--max-request-bytes",
        type=_positive(int),
        default=D.max_request_bytes,
        help=f"request body limit; beyond: 413 (default {_size(D.max_request_bytes)})",
    )
    p.add_argument(
        "--max-decode-pixels",
        type=_positive(int),
        default=D.max_decode_pixels,
        help=f"refuse images and video frames larger than this before decoding them (default {_square(D.max_decode_pixels)})",
    )
    p.add_argument(
        "--max-request-pixels",
        type=_positive(int),
        default=D.max_request_pixels,
        help="decoded pixels one request's media may hold (images' full sizes, videos' sampled frames as resized), "
        "checked from their headers before decoding; with --max-concurrency it bounds the memory of "
        f"preparation (default {_square(D.max_request_pixels)})",
    )
    p.add_argument("--limit-images", type=_positive(int, 0), default=D.limit_images, help=f"images per request (default {D.limit_images})")
    p.add_argument("--limit-videos", type=_positive(int, 0), default=D.limit_videos, help=f"videos per request (default {D.limit_videos})")
    p.add_argument("--threads", type=_positive(int), help="og's threads per session of the model (default: og's, every core)")
    ray = p.add_argument_group("replicas on Ray Serve (needs the ray extra: pip install 'genai-qwen3vl[ray]')")
    ray.add_argument(
        "--ray-replicas",
        metavar="N|MIN:MAX",
        help="serve with N replicas of the server, each its own og model, behind Ray Serve's proxy at --host/--port; "
        "MIN:MAX autoscales between them (target: --max-concurrency requests in flight per replica)",
    )
    ray.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="the Ray cluster to deploy on: its address (HEAD:6379, ray://HEAD:10001), or none for the one `ray start` runs "
        "here (without --ray: a local cluster of this command's own). The model folder must be at the same path on every node",
    )
    ray.add_argument(
        "--ray-cpus-per-replica",
        type=_cpus,
        default=1.0,
        help="CPUs Ray reserves for each replica; og's threads follow it unless --threads is given (default 1)",
    )
    ray.add_argument(
        "--ray-autoscaling",
        metavar="JSON",
        help='more of Ray Serve\'s autoscaling fields, e.g. \'{"target_ongoing_requests": 2, "downscale_delay_s": 300}\'',
    )
    p.add_argument("--log-level", default=D.log_level, choices=("debug", "info", "warning", "error"), help=f"default {D.log_level}")
    return p


def _cpus(text: str) -> float:
    """--ray-cpus-per-replica: a finite number of CPUs > 0 (Ray takes fractions)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and 0 < value <= 4096):
        raise argparse.ArgumentTypeError(f"must be a number of CPUs > 0 (fractions allowed), got {text}")
    return value


def options_of(args: argparse.Namespace) -> ServeOptions:
    """The parsed flags as the server's options."""
    return ServeOptions(
        model_dir=args.model_dir,
        model_name=args.model_name,
        api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
        max_concurrency=args.max_concurrency,
        max_queue=args.max_queue,
        allowed_media_dir=args.allowed_media_dir,
        min_image_pixels=args.min_image_pixels,
        max_image_pixels=args.max_image_pixels,
        timeout=args.timeout,
        max_model_len=args.max_model_len,
        max_request_bytes=args.max_request_bytes,
        max_decode_pixels=args.max_decode_pixels,
        max_request_pixels=args.max_request_pixels,
        limit_images=args.limit_images,
        limit_videos=args.limit_videos,
        threads=args.threads,
        host=args.host,
        port=args.port,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        keep_alive_timeout=args.keep_alive_timeout,
        log_level=args.log_level,
    )


def main(argv: list[str] | None = None, prog: str = "genai-qwen3vl serve") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.ray_replicas is None:
        for flag in ("ray", "ray_autoscaling"):
            if getattr(args, flag) is not None:
                parser.error(f"--{flag.replace('_', '-')} goes with --ray-replicas N")
    try:
        import uvicorn

        from .app import create_app
        from .deadlines import BodyDeadline, HeaderDeadline
        from .engine import check_model_dir
    except ImportError as exc:
        print(f'error: the server needs the serve extra ({exc.name} is missing): pip install "genai-qwen3vl[serve]"', file=sys.stderr)
        return 2
    try:
        check_model_dir(args.model_dir)
        if args.allowed_media_dir is not None and not args.allowed_media_dir.is_dir():
            raise ServerError(f"--allowed-media-dir {args.allowed_media_dir} is not a folder; give an existing folder of media files")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    options = options_of(args)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s: %(message)s")
    try:  # before the model loads: a port in use is one line, at once
        sockets = _bind(options.host, options.port)
    except OSError as exc:
        why = exc.strerror or str(exc)
        print(
            f"error: cannot listen on {args.host} port {args.port} ({why}); give another --host or --port (--port 0 picks a free one)",
            file=sys.stderr,
        )
        return 3
    if args.ray_replicas is not None:
        return _serve_on_ray(args, options, sockets)
    fatal: list[str] = []
    server = None

    def on_fatal(message: str) -> None:
        fatal.append(message)
        if server is not None:
            server.should_exit = True

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            # uvicorn re-raises SIGTERM/SIGINT once it has shut down, so the process dies of the
            # signal; after a complete drain we exit 0 instead. A second Ctrl-C still forces it.
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    app = create_app(options, on_fatal=on_fatal)
    app.add_middleware(BodyDeadline, timeout=options.body_timeout)
    # timeout_graceful_shutdown: on SIGTERM/Ctrl-C, requests in flight get up to --timeout to finish
    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        log_level=options.log_level,
        timeout_graceful_shutdown=int(options.timeout) + 1,
        http=HeaderDeadline.limited(options.header_timeout),
        timeout_keep_alive=options.keep_alive_timeout,
    )
    server = Server(config)
    port = sockets[0].getsockname()[1]
    host = options.host
    logging.getLogger("genai_qwen3vl.serve").info("listening on http://%s:%d", f"[{host}]" if ":" in host else host, port)
    server.run(sockets=sockets)
    if fatal:
        print(f"error: cannot serve {args.model_dir}: {fatal[0]}", file=sys.stderr)
        return 2
    return 0


def _serve_on_ray(args: argparse.Namespace, options: ServeOptions, sockets: list[socket.socket]) -> int:
    """--ray-replicas: the port is free (and chosen, for --port 0); Ray Serve's proxy listens on it."""
    port = sockets[0].getsockname()[1]
    for sock in sockets:
        sock.close()
    try:
        from . import ray_serve
    except ImportError as exc:
        print(f"error: --ray-replicas needs the ray extra ({exc.name} is missing): pip install 'genai-qwen3vl[ray]'", file=sys.stderr)
        return 2
    try:
        replicas = ray_serve.parse_replicas(args.ray_replicas)
    except ValueError as exc:
        print(f"error: --ray-replicas {exc}", file=sys.stderr)
        return 2
    try:
        autoscaling = ray_serve.autoscaling_fields(args.ray_autoscaling)
        address = "local" if args.ray is None else args.ray or "auto"  # the flag alone: the cluster `ray start` runs here
        return ray_serve.run(dataclasses.replace(options, port=port), address, replicas, autoscaling, args.ray_cpus_per_replica)
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _bind(host: str, port: int) -> list[socket.socket]:
    """Bound (not yet listening) sockets for every address ``host`` names, as asyncio's
    create_server would make them ("" is every interface, as there); an OSError names what failed
    (in use, no such address)."""
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(
            socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        ):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:  # one free port for every address
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.bind(address)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


if __name__ == "__main__":
    sys.exit(main(prog="python -m genai_qwen3vl.serve"))
