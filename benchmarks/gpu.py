"""GPU benchmark: onnxruntime-genai-cuda against transformers on the same GPU in the same dtype.

    python benchmarks/gpu.py all --workdir /tmp/gpubench --json gpu.json            # prepare, then measure
    python benchmarks/gpu.py prepare --workdir /tmp/gpubench [--layers 8 --vision-layers 8]
    python benchmarks/gpu.py measure --workdir /tmp/gpubench --json gpu.json

On a random checkpoint with Qwen3-VL-2B's real widths (``benchmarks.models.qwen3vl_2b_shape``,
cut to ``--layers`` text layers and ``--vision-layers`` vision blocks), exported with
``-e cuda -p fp16`` (and ``-p int4``, og's MatMulNBits), it measures, each engine in its own process:

* decode tokens/s after a 128-token text prompt (``--steps`` greedy tokens, median of ``--repeats``);
* time to first token, preprocessing included on both sides: a text prompt of about 512 tokens,
  and an image prompt (1280x720 picture, about 1000 tokens);
* og's model load time and the GPU memory each process holds (NVML);
* the first greedy tokens of the decode prompt, to see that both engines agree;

against transformers in float16 on the GPU (its default attention, sdpa; ``model.generate``).
It prints og's figures over transformers' and writes everything as JSON.
Needs onnxruntime-gpu, onnxruntime-genai-cuda and a CUDA device.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DECODE_PROMPT_TOKENS = 128
TEXT_PROMPT_TOKENS = 512
IMAGE = (720, 1280)  # height, width: 1280x720, about 880 image tokens
IMAGE_TEXT = "Describe this image in detail."
SAME_TOKENS = 16  # greedy tokens compared between the engines


def _gpu_memory_gb() -> float | None:
    """GPU memory this process holds, by NVML (None where NVML cannot say)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if proc.pid == os.getpid() and proc.usedGpuMemory:
                return proc.usedGpuMemory / 2**30
    except Exception:  # noqa: BLE001 - a missing or refusing NVML only drops this figure
        return None
    return None


def _prompts(model_dir: Path) -> dict[str, str]:
    from benchmarks.measures import chat_prompt, long_text

    return {
        "decode": chat_prompt(model_dir, False, long_text(model_dir, DECODE_PROMPT_TOKENS)),
        "text": chat_prompt(model_dir, False, long_text(model_dir, TEXT_PROMPT_TOKENS)),
        "image": chat_prompt(model_dir, True, IMAGE_TEXT),
    }


# --------------------------------------------------------------------------- measurements (child processes)
def measure_og(model_dir: str, repeats: int, steps: int) -> dict:
    import onnxruntime_genai as og

    from benchmarks.measures import median_time, og_greedy_stream
    from genai_qwen3vl.runtime.processor import Qwen3VLProcessor
    from genai_qwen3vl.testing.media import make_picture

    model_dir = Path(model_dir)
    t0 = time.perf_counter()
    model = og.Model(str(model_dir))
    load_s = time.perf_counter() - t0
    processor = Qwen3VLProcessor(model_dir)
    prompts = _prompts(model_dir)
    picture = make_picture(*IMAGE, 2)

    def start(prompt, images, new_tokens):
        return og_greedy_stream(model, processor, prompt, images, new_tokens)

    out: dict = {"load_s": load_s}
    for kind, images in (("text", []), ("image", [picture])):
        state = {}

        def first(prompt=prompts[kind], images=images, state=state):
            stream, state["n"] = start(prompt, images, 1)
            next(stream)

        out[f"ttft_{kind}_ms"] = median_time(first, repeats) * 1000
        out[f"ttft_{kind}_prompt_tokens"] = state["n"]
    rates = []
    for _ in range(repeats + 1):  # the first is the warm-up
        stream, n = start(prompts["decode"], [], steps + 1)
        for _ in stream:  # the first token, then `steps` timed from it to the last
            pass
        rates.append(steps / stream.decode_s)
    out["decode_tokens_per_s"] = statistics.median(rates[1:])
    out["decode_prompt_tokens"] = n
    out["tokens"] = stream.tokens[:SAME_TOKENS]
    out["gpu_memory_gb"] = _gpu_memory_gb()
    return out


def measure_hf(model_dir: str, checkpoint: str, repeats: int, steps: int, dtype: str = "fp16", device: str = "cuda") -> dict:
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoProcessor

    from benchmarks.measures import median_time
    from genai_qwen3vl.model.spec import Qwen3VLSpec
    from genai_qwen3vl.testing.media import make_picture

    model_dir = Path(model_dir)
    torch_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    arch = Qwen3VLSpec.from_checkpoint(checkpoint).architecture
    t0 = time.perf_counter()
    model = arch.transformers_class(arch.hf_class).from_pretrained(checkpoint, dtype=torch_dtype).to(device).eval()
    load_s = time.perf_counter() - t0
    processor = AutoProcessor.from_pretrained(checkpoint)
    processor.image_processor = AutoImageProcessor.from_pretrained(checkpoint, backend="pil")
    prompts = _prompts(model_dir)
    picture = Image.fromarray(make_picture(*IMAGE, 2))

    def encode(prompt, images):
        kwargs = {"images": images} if images else {}
        return processor(text=[prompt], return_tensors="pt", **kwargs).to(device)

    def generate(enc, new_tokens):
        with torch.no_grad():
            seq = model.generate(**enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        if device == "cuda":
            torch.cuda.synchronize()
        return seq

    out: dict = {"load_s": load_s}
    for kind, images in (("text", []), ("image", [picture])):
        state = {}

        def first(prompt=prompts[kind], images=images, state=state):
            enc = encode(prompt, images)
            state["n"] = int(enc["input_ids"].shape[1])
            generate(enc, 1)

        out[f"ttft_{kind}_ms"] = median_time(first, repeats) * 1000
        out[f"ttft_{kind}_prompt_tokens"] = state["n"]
    enc = encode(prompts["decode"], [])
    n = int(enc["input_ids"].shape[1])
    # decode rate: (time of steps + 1 new tokens - time of 1 new token), medians after a warm-up
    t1 = median_time(lambda: generate(enc, 1), repeats)
    tn = median_time(lambda: generate(enc, steps + 1), repeats)
    seq = generate(enc, SAME_TOKENS)
    out["decode_tokens_per_s"] = steps / (tn - t1)
    out["decode_prompt_tokens"] = n
    out["tokens"] = [int(t) for t in seq[0, n : n + SAME_TOKENS].tolist()]
    out["dtype"] = dtype
    out["gpu_memory_gb"] = _gpu_memory_gb()
    out["torch_max_allocated_gb"] = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    return out


MEASURES = {"og": measure_og, "hf": measure_hf}


def child(name: str, *args) -> dict:
    """One measurement in a fresh process; its JSON (its stderr goes to ours)."""
    proc = subprocess.run([sys.executable, __file__, "--_child", name, json.dumps(args)], stdout=subprocess.PIPE, text=True)
    if proc.returncode:
        raise SystemExit(f"{name}{args} failed with exit code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- orchestration
def _paths(workdir: Path, layers: int, vision_layers: int, tiny: str | None = None):
    """The preset (the 2B shape, or a tests' tiny preset by name for a dry run), its checkpoint
    folder and its export folder per precision."""
    from benchmarks.models import qwen3vl_2b_shape
    from genai_qwen3vl.testing.tiny import PRESETS

    preset = PRESETS[tiny] if tiny else qwen3vl_2b_shape(layers, vision_layers)
    return preset, workdir / "ckpt" / preset.name, {p: workdir / f"{preset.name}-{p}" for p in ("fp32", "fp16", "bf16", "int4")}


def prepare(workdir: Path, layers: int, vision_layers: int, precisions: list[str], ep: str = "cuda", tiny: str | None = None) -> dict:
    from benchmarks.models import cached_checkpoint
    from genai_qwen3vl.model.folder import is_exported_folder

    preset, _, exports = _paths(workdir, layers, vision_layers, tiny)
    t0 = time.perf_counter()
    ckpt = cached_checkpoint(preset, cache=workdir / "ckpt")
    info = {"checkpoint": str(ckpt), "checkpoint_s": round(time.perf_counter() - t0, 1), "export_s": {}}
    print(f"checkpoint {ckpt.name}: {info['checkpoint_s']} s", flush=True)
    for precision in precisions:
        out = exports[precision]
        if is_exported_folder(out):
            continue
        t0 = time.perf_counter()
        cmd = [sys.executable, str(ROOT / "builder_qwen3vl.py"), "-i", str(ckpt), "-o", str(out), "-p", precision, "-e", ep]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seconds = round(time.perf_counter() - t0, 1)
        info["export_s"][precision] = seconds
        print(f"export {precision} -e {ep}: exit {proc.returncode} in {seconds} s", flush=True)
        if proc.returncode:
            print(proc.stdout[-3000:], flush=True)
    (workdir / "prepare.json").write_text(json.dumps(info, indent=1))
    return info


def measure(
    workdir: Path,
    layers: int,
    vision_layers: int,
    precisions: list[str],
    repeats: int,
    steps: int,
    hf_dtype: str = "fp16",
    ep: str = "cuda",
    tiny: str | None = None,
) -> dict:
    from genai_qwen3vl.model.folder import is_exported_folder

    preset, ckpt, exports = _paths(workdir, layers, vision_layers, tiny)
    results: dict = {
        "config": {
            "layers": layers,
            "vision_layers": vision_layers,
            "repeats": repeats,
            "decode_steps": steps,
            "decode_prompt_tokens": DECODE_PROMPT_TOKENS,
            "checkpoint": preset.name,
            "execution_provider": ep,
        },
    }
    prep = workdir / "prepare.json"
    if prep.is_file():
        results["prepare"] = json.loads(prep.read_text())
    engines = {}
    for precision in precisions:
        if is_exported_folder(exports[precision]):
            engines[f"og_{precision}"] = child("og", str(exports[precision]), repeats, steps)
            print(f"og {precision}: {json.dumps(engines[f'og_{precision}'])}", flush=True)
    model_dir = next(exports[p] for p in precisions if is_exported_folder(exports[p]))
    hf_name = f"hf_{hf_dtype}"
    engines[hf_name] = child("hf", str(model_dir), str(ckpt), repeats, steps, hf_dtype, "cuda" if ep == "cuda" else "cpu")
    print(f"{hf_name}: {json.dumps(engines[hf_name])}", flush=True)
    results["engines"] = engines
    hf = engines[hf_name]
    ratios = {}
    for name, r in engines.items():
        if name.startswith("og_"):
            same = 0
            for a, b in zip(r["tokens"], hf["tokens"], strict=False):
                if a != b:
                    break
                same += 1
            ratios[name] = {
                "decode_vs_hf": r["decode_tokens_per_s"] / hf["decode_tokens_per_s"],
                "ttft_text_vs_hf": r["ttft_text_ms"] / hf["ttft_text_ms"],
                "ttft_image_vs_hf": r["ttft_image_ms"] / hf["ttft_image_ms"],
                "same_greedy_prefix_tokens": same,
            }
    results["ratios"] = ratios
    print("\n| engine | decode tok/s | TTFT text ms | TTFT image ms | GPU GB |")
    print("|---|---|---|---|---|")
    for name, r in engines.items():
        gpu = r.get("gpu_memory_gb")
        print(
            f"| {name} | {r['decode_tokens_per_s']:.1f} | {r['ttft_text_ms']:.1f} | {r['ttft_image_ms']:.1f} | "
            f"{'' if gpu is None else f'{gpu:.2f}'} |"
        )
    for name, q in ratios.items():
        print(
            f"{name} / {hf_name}: decode {q['decode_vs_hf']:.2f}x, TTFT text {q['ttft_text_vs_hf']:.2f}x, "
            f"TTFT image {q['ttft_image_vs_hf']:.2f}x (lower is faster), same greedy prefix {q['same_greedy_prefix_tokens']}/"
            f"{SAME_TOKENS}",
            flush=True,
        )
    return results


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--_child":
        print(json.dumps(MEASURES[sys.argv[2]](*json.loads(sys.argv[3]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=("prepare", "measure", "all"))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/genai_qwen3vl_gpu_bench"))
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--vision-layers", type=int, default=8)
    parser.add_argument("--precisions", default="fp16,int4")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--hf-dtype", default="fp16", choices=("fp16", "bf16", "fp32"))
    parser.add_argument("--ep", default="cuda", choices=("cuda", "cpu"), help="execution provider of the exports (cpu: a dry run)")
    parser.add_argument("--tiny", help="a tests' tiny preset instead of the 2B shape (a dry run)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    precisions = args.precisions.split(",")
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.stage in ("prepare", "all"):
        prepare(args.workdir, args.layers, args.vision_layers, precisions, args.ep, args.tiny)
    if args.stage in ("measure", "all"):
        results = measure(
            args.workdir, args.layers, args.vision_layers, precisions, args.repeats, args.steps, args.hf_dtype, args.ep, args.tiny
        )
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
