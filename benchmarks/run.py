"""Benchmarks against transformers and the memory-bandwidth limit, measured side by side in one run.

    python benchmarks/run.py --quick                 # 8 text layers, 8 vision blocks
    python benchmarks/run.py --layers 28 --vision-layers 24 --json docs/benchmarks.json --docs

On a random checkpoint with Qwen3-VL-2B's real widths (built once, cached), exported with our
builder (fp32 and int4), it measures medians after warm-up:

* vision encoder latency and peak memory, 448x448 and 1280x720: vision.onnx in onnxruntime vs
  transformers' vision tower (sdpa);
* time to first token for an image prompt of about 1000 tokens: og vs transformers;
* decode tokens/s: og fp32, og int4, transformers fp32 (its default attention, sdpa);
* export time and peak RSS;
* what int4 costs against fp32 (og int4 at its default accuracy_level 4 fed the fp32 model's
  greedy tokens): KL divergence of the next-token distributions per step, top-1 agreement;
* the machine's read bandwidth (the best of several read kernels at 1, 2 and all threads over
  1 GiB), the bytes of weights read per
  decoded token and each decode figure's fraction of that roofline;
* the int4 export's weight error: relative RMS of its dequantized text weights against the
  checkpoint's, per tensor class.

With ``--llama-cpp DIR`` (a llama.cpp tree with llama-bench, llama-mtmd-cli and llama-quantize
built; see benchmarks/llama_cpp.py), the checkpoint is also converted to GGUF (f32, Q8_0, Q4_0,
Q4_K_M; vision projector f32 and f16) and llama.cpp is measured beside og in the same run,
the engines alternating round by round: decode and prefill tokens/s, peak RSS decoding, image
encode, time to first token and weight error, with og's figures over llama.cpp's.

Every engine runs in its own process, one after the other, so that memory figures are its own
and two models never compete for RAM; each reports its own peak (VmHWM, which a new program
starts afresh, unlike ru_maxrss, which survives exec and would report the parent's peak).

The code: benchmarks/measures.py (what one process measures), benchmarks/orchestration.py (which
runs, in which processes and order), benchmarks/reports.py (derived figures, tables, the chart);
this file is the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.measures import peak_gb as _peak_gb  # noqa: E402, F401 - the name tests/benchmarks imports
from benchmarks.orchestration import run, run_moe, run_vision_quant  # noqa: E402
from benchmarks.reports import chart, markdown, moe_markdown, vision_quant_markdown  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=28)
    parser.add_argument("--vision-layers", type=int, default=24)
    parser.add_argument("--quick", action="store_true", help="8 text layers, 8 vision blocks, fewer repeats")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument(
        "--family",
        choices=("qwen3-vl", "qwen3.5"),
        default="qwen3-vl",
        help="the dense benchmark's shape: Qwen3-VL-2B's (default) or Qwen3.5-2B's (give --layers 24 for its full depth; "
        "with --docs: docs/qwen35_benchmarks.md)",
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--docs", action="store_true", help="write docs/benchmarks.md and docs/benchmarks.png")
    parser.add_argument(
        "--moe",
        type=int,
        nargs="*",
        metavar="LAYERS",
        help="instead: the Qwen3-VL-30B-A3B shape cut to these depths (default 2 4), extrapolated to 48 layers "
        "(with --docs: docs/moe_benchmarks.md)",
    )
    parser.add_argument(
        "--vision-quant",
        choices=("int8", "int4"),
        help="instead: og int4 with the fp32 vision tower against og int4 with --vision_quant (image encode, time to first "
        "token, decode memory, feature error, next-token KL on an image prompt)",
    )
    parser.add_argument(
        "--llama-cpp",
        type=Path,
        metavar="DIR",
        help="also llama.cpp, from this llama.cpp tree with llama-bench, llama-mtmd-cli and llama-quantize built in build/bin "
        "(converted to GGUF f32, Q8_0, Q4_0, Q4_K_M; measured beside og, round by round)",
    )
    args = parser.parse_args()
    if args.vision_quant and (args.moe is not None or args.llama_cpp):
        parser.error("--vision-quant is a benchmark of its own, without --moe or --llama-cpp")
    if args.family != "qwen3-vl" and (args.moe is not None or args.vision_quant):
        parser.error("--family goes with the dense benchmark, not --moe or --vision-quant")
    llama = None
    if args.llama_cpp:
        if args.moe is not None:
            parser.error("--llama-cpp goes with the dense benchmark, not --moe")
        from benchmarks.llama_cpp import LlamaCpp

        llama = LlamaCpp.find(args.llama_cpp, os.cpu_count() or 1)  # the og side's thread count too
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="genai_qwen3vl-bench-") as work:
        if args.vision_quant:
            layers, vision_layers = (8, 8) if args.quick else (args.layers, args.vision_layers)
            results = run_vision_quant(layers, vision_layers, args.vision_quant, args.repeats or 3, Path(work))
        elif args.moe is not None:
            results = run_moe(args.moe or [2, 4], args.repeats or 3, Path(work))
        else:
            layers, vision_layers = (8, 8) if args.quick else (args.layers, args.vision_layers)
            results = run(layers, vision_layers, args.repeats or (3 if args.quick else 5), Path(work), llama, args.family)
    results["benchmark_seconds"] = round(time.perf_counter() - start)
    if args.vision_quant:
        text = vision_quant_markdown(results)
    else:
        text = moe_markdown(results) if args.moe is not None else markdown(results)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    if args.docs:
        docs = ROOT / "docs"
        docs.mkdir(exist_ok=True)
        if args.vision_quant:
            (docs / f"vision_{args.vision_quant}_benchmarks.md").write_text(f"# Benchmarks: --vision_quant {args.vision_quant}\n\n" + text)
        elif args.moe is not None:
            (docs / "moe_benchmarks.md").write_text("# Benchmarks: Qwen3-VL-MoE\n\n" + text)
        elif args.family == "qwen3.5":
            (docs / "qwen35_benchmarks.md").write_text("# Benchmarks: Qwen3.5\n\n" + text)
        else:
            (docs / "benchmarks.md").write_text("# Benchmarks\n\n" + text)
            chart(results, docs / "benchmarks.png")


if __name__ == "__main__":
    main()
