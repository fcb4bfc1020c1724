"""The server against og directly, in one run: what the HTTP layer costs, and how throughput scales
with --max-concurrency.

    python benchmarks/serve.py                       # a 2B-wide random checkpoint cut to 8 layers, int4 CPU
    python benchmarks/serve.py --model OUT_DIR --tokens 128 --json docs/serve_benchmark.json

Measured, greedy, the same prompt and exactly --tokens tokens on both sides (medians of --rounds):

* decode tokens/s streamed through ``POST /v1/chat/completions`` (server-sent events read by
  httpx, counted from the first token to the last) against the same generation through og's
  Generator in this process; the ratio (goal >= 0.95);
* time to first byte and to first token over HTTP against og's time to first token (prefill):
  the overhead the server adds;
* aggregate tokens/s of 2x``c`` simultaneous streamed requests at ``--max-concurrency c`` for
  c = 1, 2, 4 (each request its own og Generator; og 0.18 cannot batch multimodal requests).

og runs first, alone; then the server, in its own process, so the two never share the cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPT = "Describe this image in detail. " * 12


def default_model(layers: int) -> Path:
    """A random checkpoint with Qwen3-VL-2B's widths cut to ``layers`` text layers, exported int4 (cached)."""
    from benchmarks.models import DEFAULT_CACHE, cached_checkpoint, qwen3vl_2b_shape
    from genai_qwen3vl.cli import export_main
    from genai_qwen3vl.model.folder import is_exported_folder

    ckpt = cached_checkpoint(qwen3vl_2b_shape(layers, layers))  # the same checkpoint as run.py --quick
    out = DEFAULT_CACHE / f"{ckpt.name}-int4-cpu"
    if not is_exported_folder(out):
        if export_main(["-i", str(ckpt), "-o", str(out), "-p", "int4", "-e", "cpu", "--overwrite"]) != 0:
            raise SystemExit("export failed")
    return out


def og_direct(model_dir: Path, tokens: int, rounds: int) -> dict:
    import onnxruntime_genai as og

    from genai_qwen3vl.runtime.generate import TokenStream
    from genai_qwen3vl.runtime.processor import Qwen3VLProcessor

    model = og.Model(str(model_dir))
    processor = Qwen3VLProcessor(model_dir)
    prompt = processor.apply_chat_template([{"role": "user", "content": PROMPT}])
    runs = []
    for _ in range(rounds + 1):  # the first run warms up
        start = time.perf_counter()
        inputs = processor(prompt)
        length = int(inputs["input_ids"].shape()[-1]) + tokens
        # exactly `tokens`, as min_tokens below
        stream = TokenStream(model, inputs, {"do_sample": False, "max_length": length, "min_length": length})
        n = len(list(stream))
        runs.append({"ttft_s": stream.first_at - start, "tokens": n, "decode_tokens_per_s": (n - 1) / stream.decode_s})
    return _medians(runs[1:])


def _medians(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def stream_once(base_url: str, tokens: int) -> dict:
    import httpx

    body = {
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": tokens,
        "min_tokens": tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "return_token_ids": True,
    }
    start = time.perf_counter()
    first_byte = first_token = None
    usage = None
    with httpx.Client(timeout=600) as client, client.stream("POST", f"{base_url}/v1/chat/completions", json=body) as r:
        for line in r.iter_lines():
            now = time.perf_counter()
            first_byte = first_byte or now
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            if chunk["choices"] and chunk["choices"][0].get("token_ids"):  # (a random model's tokens may decode to no text)
                first_token = first_token or now
        end = time.perf_counter()
    n = usage["completion_tokens"]
    return {
        "ttfb_s": first_byte - start,
        "ttft_s": first_token - start,
        "tokens": n,
        "decode_tokens_per_s": (n - 1) / (end - first_token),
        "total_s": end - start,
    }


def _collect(outs: list, base_url: str, tokens: int) -> None:
    outs.append(stream_once(base_url, tokens))


def through_server(model_dir: Path, tokens: int, rounds: int, concurrency: list[int], log_dir: Path) -> dict:
    from genai_qwen3vl.testing.server import ServerProcess

    result: dict = {}
    for c in concurrency:
        flags = ("--max-concurrency", str(c), "--max-queue", "64", "--log-level", "warning")
        with ServerProcess(model_dir, *flags, log_dir=log_dir) as server:
            if c == concurrency[0]:
                runs = [stream_once(server.base_url, tokens) for _ in range(rounds + 1)][1:]
                result["single"] = _medians(runs)
            stream_once(server.base_url, tokens)  # warm-up
            outs: list[dict] = []
            threads = [threading.Thread(target=_collect, args=(outs, server.base_url, tokens)) for _ in range(2 * c)]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - start
            result[f"aggregate_c{c}"] = {
                "requests": len(outs),
                "tokens": sum(o["tokens"] for o in outs),
                "wall_s": wall,
                "tokens_per_s": sum(o["tokens"] for o in outs) / wall,
            }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="an exported folder (default: a 2B-wide random checkpoint, int4)")
    parser.add_argument("--layers", type=int, default=8, help="text layers (and vision blocks) of the default checkpoint (default 8)")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per answer (default 64)")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds, after one warm-up (default 3)")
    parser.add_argument("--concurrency", default="1,2,4", help="--max-concurrency values for the aggregate figure")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    import tempfile

    model = args.model or default_model(args.layers)
    direct = og_direct(model, args.tokens, args.rounds)
    with tempfile.TemporaryDirectory() as logs:
        served = through_server(model, args.tokens, args.rounds, [int(c) for c in args.concurrency.split(",")], Path(logs))
    single = served["single"]
    results = {
        "model": str(model),
        "tokens": args.tokens,
        "og_direct": direct,
        "server": served,
        "decode_ratio_server_over_og": single["decode_tokens_per_s"] / direct["decode_tokens_per_s"],
        "ttft_overhead_ms": 1000 * (single["ttft_s"] - direct["ttft_s"]),
    }
    print(f"model {model}, {args.tokens} tokens, greedy, medians of {args.rounds}")
    print(
        f"decode tokens/s: og direct {direct['decode_tokens_per_s']:.1f}, through the API (streamed) "
        f"{single['decode_tokens_per_s']:.1f}: {results['decode_ratio_server_over_og']:.3f}x"
    )
    print(
        f"first token: og {1000 * direct['ttft_s']:.0f} ms, API {1000 * single['ttft_s']:.0f} ms "
        f"(+{results['ttft_overhead_ms']:.0f} ms; first byte after {1000 * single['ttfb_s']:.0f} ms)"
    )
    for key, value in served.items():
        if key.startswith("aggregate"):
            print(
                f"--max-concurrency {key[len('aggregate_c') :]}: {value['requests']} simultaneous requests, "
                f"{value['tokens_per_s']:.1f} tokens/s in all"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
