"""The built-in default job: make a tiny random Qwen3-VL checkpoint on the spot, export it with
the command line, ask it about a generated picture through stock onnxruntime-genai, and show
the answer and its parity with transformers.

    genai-qwen3vl demo [--workdir qwen3vl_demo] [--preset NAME]     (what scripts/demo.sh runs)

The weights are random, so the answer is gibberish; what matters is that og and transformers
produce the same tokens and logits.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DESCRIPTION = (
    "Make a tiny random Qwen3-VL checkpoint, export it, ask it about a generated picture through stock "
    "onnxruntime-genai, and check the answer against transformers."
)


def main(argv: list[str] | None = None, prog: str = "genai-qwen3vl demo") -> int:
    from ..testing.tiny import PRESETS

    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    parser.add_argument("--workdir", type=Path, default=Path("qwen3vl_demo"), help="where to write the checkpoint and model")
    parser.add_argument(
        "--preset",
        default="awkward",
        choices=list(PRESETS),
        help="tiny checkpoint preset (genai_qwen3vl/testing/tiny.py; default awkward)",
    )
    parser.add_argument("--steps", type=int, default=24, help="tokens to generate")
    args = parser.parse_args(argv)
    from ..extras import MissingExtraError, require_extra

    try:  # it makes a checkpoint with transformers, exports it and checks it against transformers
        require_extra("verify", "the demo")
    except MissingExtraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    import onnxruntime_genai as og
    from PIL import Image
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()

    from ..errors import ParityError
    from ..export_command import export_main
    from ..model.precisions import target
    from ..runtime.generate import TokenStream
    from ..testing.tiny import make_tiny_checkpoint
    from . import generation
    from .pictures import make_picture
    from .reference import Reference

    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(f"1. making a tiny random Qwen3-VL checkpoint ({args.preset}) in {work / 'checkpoint'}")
    checkpoint = make_tiny_checkpoint(work / "checkpoint", args.preset, seed=0)
    print("2. exporting it: python builder_qwen3vl.py -i checkpoint -o model -p fp32 -e cpu")
    rc = export_main(["-i", str(checkpoint), "-o", str(work / "model"), "-p", "fp32", "-e", "cpu", "--overwrite"])
    if rc:
        return rc
    picture = work / "picture.png"
    Image.fromarray(make_picture(300, 400, seed=3)).save(picture)
    print(f"3. asking about {picture} through stock onnxruntime-genai {og.__version__}")

    model = og.Model(str(work / "model"))
    tokenizer = og.Tokenizer(model)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this image."}]}]
    prompt = tokenizer.apply_chat_template(json.dumps(messages), add_generation_prompt=True)
    processor = model.create_multimodal_processor()
    inputs = processor(prompt, images=og.Images.open(str(picture)))
    search = {"do_sample": False, "max_length": int(inputs["input_ids"].shape()[-1]) + args.steps}
    stream = tokenizer.create_stream()
    tokens = list(TokenStream(model, inputs, search))
    text = "".join(stream.decode(token) for token in tokens)
    print(f"   answer (random weights, so gibberish): {text!r}")
    print(f"   token ids: {tokens}")

    print("4. checking parity with transformers (same prompt, same picture, greedy)")
    ref = Reference.load(checkpoint)
    tol = target("fp32", "cpu").tolerance
    ours = generation.og_generate(work / "model", prompt, [picture], steps=args.steps)
    theirs = generation.hf_generate(ref, prompt, [Image.open(picture)], steps=args.steps)
    cmp = generation.compare_generations(ours, theirs)
    print(f"   {cmp.summary()} (tolerance {tol.end_to_end:g})")
    try:
        generation.assert_generation_parity(cmp, tol.end_to_end, args.steps, "demo")
    except ParityError as exc:
        print(f"   FAILED: {exc}")
        return 1
    print("   og and transformers agree.")
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m genai_qwen3vl.verify.demo"))
