"""``genai-qwen3vl batch OUT_DIR --input IN --output OUT``: answer every row, resumably.

Exit codes: 0 every row answered; 3 the job ended and some rows hold an error (missing or corrupt
files, prompts too long: the output says which and why); 2 a problem with the input, the output
or the options (one line); 4 the output could not be written (a full disk: the rows written so far
stay, the same command goes on later); 130 interrupted (the same command goes on); 1 an internal
error.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ...model.folder import ExportedFolder
from .. import sampling
from ..flags import add_flag, positive
from .pool import EngineError, LocalPool
from .store import ChunkStore, StoreError
from .table import TableError, read_rows

DESCRIPTION = "Answer a folder of images and videos, or a JSONL / CSV / Parquet table of requests, resumably."
EPILOG = """examples:
  %(prog)s qwen3vl-2b-cpu --input scans/ --prompt "Transcribe the text." --output scans.jsonl
  %(prog)s qwen3vl-2b-cpu --input requests.jsonl --output answers.parquet --temperature 0

A table has the columns id, image (a path or a list), video, prompt, and optionally system,
max_tokens and response_format (OpenAI's json_object / json_schema); paths are relative to the
table. Each output row has id, text, reasoning, json, tool_calls, prompt_tokens,
completion_tokens, seconds and error. Stopped for any reason, the same command goes on where it
stopped; each input row is in the output once (docs/batch.md)."""
FLUSH_SECONDS = 10.0


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model_dir", type=Path, metavar="OUT_DIR", help="folder written by builder_qwen3vl.py")
    parser.add_argument("--input", "-i", type=Path, required=True, help="a folder of images/videos, or a .jsonl, .csv or .parquet table")
    parser.add_argument("--output", "-o", type=Path, required=True, help="the answers: .jsonl or .parquet")
    parser.add_argument("--prompt", "-p", help="the question for every row (a folder's files, or a table without a prompt column)")
    add_flag(parser, "max_tokens", type=positive(int), default=512, help="answer tokens per row, unless its max_tokens says (default 512)")
    add_flag(parser, "max_model_len", type=positive(int), help="prompt + answer tokens (default: genai_config.json's max_length, as serve)")
    add_flag(parser, "workers", type=positive(int), help="engine processes (default: one per 4 cores, at least one)")
    add_flag(parser, "threads", type=positive(int), help="og threads per engine process (default: the cores / --workers)")
    for name in ("temperature", "top_p", "top_k", "repetition_penalty"):
        bound = sampling.BOUNDS[name]
        low = f"{'(' if bound.low_open else '['}{bound.low:g}"
        note = "; 0: greedy" if name == "temperature" else ""
        add_flag(parser, name, type=sampling.argparse_type(name), help=f"in {low}, {bound.high:g}]{note}; default: genai_config.json")
    add_flag(parser, "seed", type=sampling.argparse_type("seed"), help="the sampling seed (each row starts from it)")
    add_flag(parser, "chunk_rows", type=positive(int), default=32, help="rows per chunk written (default 32; also every 10 s)")
    add_flag(parser, "retry_errors", action="store_true", help="answer again the rows an earlier run recorded an error for")
    ray = parser.add_argument_group("on a Ray cluster (pip install 'genai-qwen3vl[ray]')")
    ray.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="answer the rows on Ray Data: ADDRESS (host:port, ray://host:port or auto) names the cluster; "
        "without it, the one `ray start` runs on this machine, else a new local one. "
        "--workers is then the actors (default: as many as the nodes' CPUs hold), --threads the CPUs of each (default 4)",
    )
    add_flag(
        ray,
        "ray_ship",
        action="store_true",
        help="ship the model folder to each node once (Ray's object store) and the rows' files with the rows, "
        "for nodes that do not share this machine's paths",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar: a log line every 30 s and the summary")
    return parser


def search_options(args: argparse.Namespace, defaults: dict) -> dict:
    """The checkpoint's search defaults overridden by the flags; temperature 0 is greedy."""
    options = {k: defaults[k] for k in ("do_sample", "temperature", "top_p", "top_k", "repetition_penalty") if k in defaults}
    for key in ("temperature", "top_p", "top_k", "repetition_penalty"):
        value = getattr(args, key)
        if value is not None:
            options[key] = value
    if args.temperature is not None:
        options["do_sample"] = args.temperature > 0
    if options.get("temperature") == 0:
        options.pop("temperature")
        options["do_sample"] = False
    if args.seed is not None:
        options["random_seed"] = args.seed
    return options


class Progress:
    """tqdm's bar (rows/s, ETA) with tokens/s and the errors so far; with --quiet a log line every 30 s."""

    def __init__(self, total: int, done: int, quiet: bool):
        self.quiet, self.total, self.count, self.errors, self.tokens = quiet, total, done, 0, 0
        self.start = self.last_log = time.monotonic()
        self.bar = None
        if not quiet:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, unit="row", dynamic_ncols=True, file=sys.stderr)

    def add(self, row: dict) -> None:
        self.count += 1
        self.errors += row.get("error") is not None
        self.tokens += row.get("completion_tokens") or 0
        rate = self.tokens / max(time.monotonic() - self.start, 1e-9)
        if self.bar is not None:
            self.bar.set_postfix_str(f"{rate:.1f} tok/s, {self.errors} errors", refresh=False)
            self.bar.update(1)
        elif time.monotonic() - self.last_log >= 30:
            self.last_log = time.monotonic()
            print(f"{self.count}/{self.total} rows, {rate:.1f} tokens/s, {self.errors} errors", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def main(argv: list[str] | None = None, prog: str = "genai-qwen3vl batch") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        folder = ExportedFolder.open(args.model_dir)
        rows = read_rows(args.input, args.prompt)
        store = ChunkStore(args.output)
        done = store.done()
    except (TableError, StoreError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ids = {row.id for row in rows}
    kept = {key: row for key, row in done.items() if key in ids and not (args.retry_errors and row.get("error") is not None)}
    todo = [row for row in rows if row.id not in kept]
    search = search_options(args, dict(folder.search))
    if args.ray_ship and args.ray is None:
        print("error: --ray-ship ships the model to a Ray cluster's nodes: give --ray too", file=sys.stderr)
        return 2
    if args.ray is not None:
        from .ray_pool import RayPool, cluster_shape, default_sizes

        try:
            workers, threads = default_sizes(cluster_shape(args.ray or None), args.workers, args.threads)
        except EngineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        pool = RayPool(args.model_dir, search, args.max_tokens, workers, threads, args.max_model_len, args.ray or None, args.ray_ship)
        engines = f"{workers} Ray actor(s) x {threads} CPU(s)"
    else:
        cores = os.cpu_count() or 1
        workers = args.workers or max(1, cores // 4)
        threads = args.threads or max(1, cores // workers)
        pool = LocalPool(args.model_dir, search, args.max_tokens, workers, threads, args.max_model_len)
        engines = f"{workers} engine process(es) x {threads} thread(s)"
    if kept:
        print(
            f"{len(kept)} of {len(rows)} rows are already in {args.output} (or its .parts): answering the other {len(todo)}",
            file=sys.stderr,
        )
    progress = Progress(len(rows), len(kept), args.quiet)
    buffer: list[dict] = []
    last_flush = time.monotonic()
    started = time.monotonic()
    answered = {"rows": 0, "tokens": 0}

    def on_result(row: dict) -> None:
        nonlocal last_flush
        buffer.append(row)
        answered["rows"] += 1
        answered["tokens"] += row.get("completion_tokens") or 0
        progress.add(row)
        if len(buffer) >= args.chunk_rows or time.monotonic() - last_flush >= FLUSH_SECONDS:
            store.write(buffer)
            buffer.clear()
            last_flush = time.monotonic()

    try:
        if todo:
            pool.run(todo, on_result)
        store.write(buffer)
        buffer.clear()
        written = store.finish([row.id for row in rows])
    except KeyboardInterrupt:
        pool.close()
        progress.close()
        try:
            store.write(buffer)
        except StoreError as exc:
            print(f"error: {exc}", file=sys.stderr)
        print(f"interrupted: {len(store.done())} of {len(rows)} rows are written; run the same command again to go on", file=sys.stderr)
        return 130
    except StoreError as exc:
        pool.close()
        progress.close()
        print(f"error: {exc}", file=sys.stderr)
        return 4
    except EngineError as exc:
        progress.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        pool.close()
    progress.close()
    final = store.done()
    errors = sum(1 for row in final.values() if row.get("error") is not None)
    seconds = time.monotonic() - started
    print(
        f"done: {written} rows in {args.output} ({errors} with an error); this run answered {answered['rows']} rows, "
        f"{answered['tokens']} tokens in {seconds:.1f} s ({answered['rows'] / max(seconds, 1e-9):.2f} rows/s, "
        f"{answered['tokens'] / max(seconds, 1e-9):.1f} tokens/s) with {engines}",
        file=sys.stderr,
    )
    return 3 if errors else 0
