"""What structured output costs: og's decode with and without a 20-key JSON schema, and the time
to the first token with the grammar's compile in it, in one run.

    python benchmarks/structured.py                       # 2B-wide random checkpoint cut to 8 layers, int4 CPU
    python benchmarks/structured.py --model OUT_DIR --rounds 5 --json docs/structured_benchmark.json

Greedy, the same prompt, alternating round by round (medians of --rounds, after a warm-up):

* constrained: ``Constraint.json_schema(SCHEMA)`` through og's guidance (``GeneratorParams.set_guidance``),
  until the JSON is complete;
* free: the same number of tokens without a constraint (``min_length`` = ``max_length``);
* decode tokens/s of each (first token to last) and their ratio (goal: constrained >= 0.9 of free);
* time to the first token of each (og.Generator created, grammar compiled by og, prompt run); the
  difference is what the constraint adds before the first token;
* the server's check before queueing (``ConstraintChecker``: jsonschema, llguidance's compile,
  the first mask), cold and then cached.

The benchmark checkpoint has Qwen3-VL-2B's widths and vocabulary (151936 logits) but the tests' small
BPE tokenizer (438 entries), so llguidance's token trie is smaller than Qwen's real one (151k
entries): the mask is cheaper here than with a released checkpoint.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPT = "Read the form in the picture and fill in every field as JSON."
# 20 keys of the kinds a form or receipt has: bounded numbers, enums, short strings, a date, a flag
SCHEMA = {
    "type": "object",
    "properties": {
        **{f"amount_{i}": {"type": "integer", "minimum": 0, "maximum": 9999} for i in range(1, 7)},
        **{f"code_{i}": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{3}$"} for i in range(1, 4)},
        **{f"name_{i}": {"type": "string", "maxLength": 12} for i in range(1, 5)},
        "currency": {"enum": ["EUR", "USD", "GBP", "JPY"]},
        "status": {"enum": ["paid", "open", "void"]},
        "paid": {"type": "boolean"},
        "total": {"type": "number", "minimum": 0, "maximum": 100000, "multipleOf": 0.01},
        "items": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 99}, "maxItems": 4},
        "day": {"type": "string", "format": "date"},
        "note": {"type": ["string", "null"], "maxLength": 16},
    },
    "additionalProperties": False,
}
SCHEMA["required"] = list(SCHEMA["properties"])
assert len(SCHEMA["required"]) == 20


def run(model_dir: Path, rounds: int) -> dict:
    import onnxruntime_genai as og

    from genai_qwen3vl.model.folder import ExportedFolder
    from genai_qwen3vl.runtime.constraints import Constraint, ConstraintChecker
    from genai_qwen3vl.runtime.generate import TokenStream
    from genai_qwen3vl.runtime.processor import Qwen3VLProcessor

    folder = ExportedFolder.open(model_dir)
    constraint = Constraint.json_schema(SCHEMA)
    checker = ConstraintChecker.for_folder(folder)
    start = time.perf_counter()
    checker.check(constraint)
    check_cold_ms = (time.perf_counter() - start) * 1e3
    start = time.perf_counter()
    checker.check(constraint)
    check_cached_ms = (time.perf_counter() - start) * 1e3

    model = og.Model(str(model_dir))
    processor = Qwen3VLProcessor(model_dir)
    prompt = processor.apply_chat_template([{"role": "user", "content": PROMPT}])
    guidance = constraint.guidance()
    constrained, free = [], []
    for i in range(rounds + 1):  # the first round warms up
        inputs = processor(prompt)
        n = int(inputs["input_ids"].shape()[-1])
        start = time.perf_counter()
        with TokenStream(model, inputs, {"do_sample": False, "max_length": n + 1024}, guidance=guidance) as stream:
            tokens = list(stream)
        held = {"ttft_s": stream.first_at - start, "tokens": len(tokens), "decode_tokens_per_s": (len(tokens) - 1) / stream.decode_s}
        text = processor.tokenizer.decode([t for t in tokens if t not in folder.eos_token_ids])
        json.loads(text)  # the answer is the schema's JSON
        inputs = processor(prompt)
        start = time.perf_counter()
        length = n + len(tokens)
        with TokenStream(model, inputs, {"do_sample": False, "max_length": length, "min_length": length}) as stream:
            count = len(list(stream))
        loose = {"ttft_s": stream.first_at - start, "tokens": count, "decode_tokens_per_s": (count - 1) / stream.decode_s}
        if i:
            constrained.append(held)
            free.append(loose)
        else:  # og builds llguidance's tokenizer for the model on its first constrained generator
            first_ttft_s = held["ttft_s"]
        print(
            f"round {i}{' (warm-up)' if not i else ''}: constrained {held['decode_tokens_per_s']:.2f} tok/s, "
            f"ttft {held['ttft_s'] * 1e3:.1f} ms ({held['tokens']} tokens); "
            f"free {loose['decode_tokens_per_s']:.2f} tok/s, ttft {loose['ttft_s'] * 1e3:.1f} ms",
            flush=True,
        )
    medians = {name: _medians(runs) for name, runs in (("constrained", constrained), ("free", free))}
    return {
        "model": str(model_dir),
        "rounds": rounds,
        "schema_keys": len(SCHEMA["properties"]),
        "check_cold_ms": round(check_cold_ms, 2),
        "first_constrained_ttft_s": first_ttft_s,
        "check_cached_ms": round(check_cached_ms, 4),
        **medians,
        "decode_ratio": medians["constrained"]["decode_tokens_per_s"] / medians["free"]["decode_tokens_per_s"],
        "ttft_added_ms": (medians["constrained"]["ttft_s"] - medians["free"]["ttft_s"]) * 1e3,
    }


def _medians(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="an exported folder (default: the 2B-wide checkpoint cut to --layers, int4 CPU)")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    if args.model is None:
        from benchmarks.serve import default_model

        args.model = default_model(args.layers)
    results = run(args.model, args.rounds)
    c, f = results["constrained"], results["free"]
    print(
        f"decode: constrained {c['decode_tokens_per_s']:.2f} tok/s, free {f['decode_tokens_per_s']:.2f} tok/s, "
        f"ratio {results['decode_ratio']:.3f} (goal >= 0.9)"
    )
    print(
        f"time to first token: constrained {c['ttft_s'] * 1e3:.1f} ms, free {f['ttft_s'] * 1e3:.1f} ms "
        f"(+{results['ttft_added_ms']:.1f} ms for the grammar); the server's check before queueing "
        f"{results['check_cold_ms']:.1f} ms cold, {results['check_cached_ms']:.3f} ms cached; "
        f"the first constrained request after loading: {results['first_constrained_ttft_s'] * 1e3:.1f} ms to its first token"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
