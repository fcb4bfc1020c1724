"""``genai-qwen3vl serve OUT_DIR``: an exported folder as an OpenAI-compatible server.

    genai-qwen3vl serve qwen3vl-2b-int4 --port 8000
    curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
         -d '{"messages": [{"role": "user", "content": "Hello"}]}'

(also ``python -m genai_qwen3vl.serve``). Needs the serve extra: ``pip install "genai-qwen3vl[serve]"``.
Ctrl-C or SIGTERM stops taking connections, lets the requests in flight finish, then exits.
Exit codes: 0 stopped, 2 a problem with the options or the folder (one line on stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

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


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'number' if kind is float else 'whole number'}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def build_parser(prog: str = "genai-qwen3vl serve") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", type=Path, metavar="OUT_DIR", help="folder written by builder_qwen3vl.py")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--model-name", help="the model id clients send and /v1/models lists (default: the folder's name)")
    p.add_argument("--api-key", help=f"require 'Authorization: Bearer KEY' on /v1 and /metrics (or set {API_KEY_ENV})")
    p.add_argument("--max-concurrency", type=_positive(int), default=1, help="generations at once, each its own og Generator (default 1)")
    p.add_argument("--max-queue", type=int, default=16, help="requests waiting for a slot; beyond them: 429 with Retry-After (default 16)")
    p.add_argument("--timeout", type=_positive(float), default=600.0, help="seconds per request, queue included (default 600)")
    p.add_argument("--allowed-media-dir", type=Path, help="local image/video paths are read only from under this folder (default: none)")
    p.add_argument("--min-image-pixels", type=_positive(int), help="default image pixel floor (default: the checkpoint's)")
    p.add_argument("--max-image-pixels", type=_positive(int), help="default image pixel budget (default: the checkpoint's)")
    p.add_argument("--max-model-len", type=_positive(int), help="prompt + answer tokens (default: genai_config.json's max_length)")
    p.add_argument("--max-length", dest="max_model_len", type=_positive(int), default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.add_argument("--max-request-bytes", type=_positive(int), default=64 * 1024 * 1024,
                   help="request body limit; beyond: 413 (default 64 MiB)")
    p.add_argument("--max-decode-pixels", type=_positive(int), default=8192 * 8192,
                   help="refuse images and video frames larger than this before decoding them (default 8192x8192)")
    p.add_argument("--limit-images", type=int, default=16, help="images per request (default 16)")
    p.add_argument("--limit-videos", type=int, default=2, help="videos per request (default 2)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"), help="default info")
    return p


def main(argv: list[str] | None = None, prog: str = "genai-qwen3vl serve") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        import uvicorn

        from .app import ServeOptions, create_app
        from .engine import check_model_dir
    except ImportError as exc:
        print(f"error: the server needs the serve extra ({exc.name} is missing): pip install \"genai-qwen3vl[serve]\"", file=sys.stderr)
        return 2
    try:
        check_model_dir(args.model_dir)
        if args.allowed_media_dir is not None and not args.allowed_media_dir.is_dir():
            raise ValueError(f"--allowed-media-dir {args.allowed_media_dir} is not a folder")
        if args.max_queue < 0 or args.limit_images < 0 or args.limit_videos < 0:
            raise ValueError("--max-queue, --limit-images and --limit-videos must be >= 0")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    options = ServeOptions(
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
        limit_images=args.limit_images,
        limit_videos=args.limit_videos,
    )
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s: %(message)s")
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
    # timeout_graceful_shutdown: on SIGTERM/Ctrl-C, requests in flight get up to --timeout to finish
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=int(args.timeout) + 1)
    server = Server(config)
    server.run()
    if fatal:
        print(f"error: cannot serve {args.model_dir}: {fatal[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m genai_qwen3vl.serve"))
