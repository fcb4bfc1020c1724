"""Benchmarks against transformers and the memory-bandwidth limit, measured side by side in one run.

    python benchmarks/run.py --quick                 # 8 text layers, 8 vision blocks: < 15 min on 2 cores
    python benchmarks/run.py --layers 28 --vision-layers 24 --json docs/benchmarks.json --docs

On a random checkpoint with Qwen3-VL-2B's real widths (built once, cached), exported with our
builder (fp32 and int4), it measures medians after warm-up:

* vision encoder latency and peak memory, 448x448 and 1280x720: vision.onnx in onnxruntime vs
  transformers' vision tower (sdpa);
* time to first token for an image prompt of about 1000 tokens: og vs transformers;
* decode tokens/s: og fp32, og int4, transformers eager fp32;
* export time and peak RSS;
* what int4 costs against fp32 (og int4 at its default accuracy_level 4 fed the fp32 model's
  greedy tokens): KL divergence of the next-token distributions per step, top-1 agreement;
* the machine's read bandwidth (the best of several read kernels at 1, 2 and all threads over
  1 GiB), the bytes of weights read per
  decoded token and each decode figure's fraction of that roofline.

Every engine runs in its own process, one after the other, so that memory figures are its own
and two models never compete for RAM; each reports its own peak (VmHWM, which a new program
starts afresh, unlike ru_maxrss, which survives exec and would report the parent's peak).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VISION_SIZES = {"448x448": (448, 448), "1280x720": (720, 1280)}
TTFT_IMAGE = (720, 1280)  # 880 image tokens + the chat text: about 1000 prompt tokens
DECODE_PROMPT_TOKENS = 128
PREFILL_PROMPT_TOKENS = 512  # the text prompt of the mixture-of-experts prefill measurement
DECODE_STEPS = 32


def _rss_gb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    return 0.0


def _peak_gb() -> float:
    """This process's own peak resident memory (VmHWM; reset by exec, unlike ru_maxrss)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def _median_time(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# --------------------------------------------------------------------------- measurements (child processes)
def _pixels(model_dir: Path, size: tuple[int, int]):
    from genai_qwen3vl.runtime.processor import Qwen3VLProcessor
    from genai_qwen3vl.testing.media import make_picture

    out = Qwen3VLProcessor(model_dir).process("<|vision_start|><|image_pad|><|vision_end|>", images=[make_picture(*size, 1)])
    return out.pixel_values, out.image_grid_thw


def measure_vision(engine: str, model_dir: str, checkpoint: str, size: str, repeats: int) -> dict:
    """The vision graph with the session options og gets from genai_config.json (no torch in
    that process), or transformers' vision tower."""
    import numpy as np

    pixels, grid = _pixels(Path(model_dir), VISION_SIZES[size])
    if engine == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        vision_cfg = json.loads((Path(model_dir) / "genai_config.json").read_text())["model"]["vision"]["session_options"]
        options.enable_mem_pattern = vision_cfg.get("enable_mem_pattern", True)
        session = ort.InferenceSession(str(Path(model_dir) / "vision.onnx"), options, providers=["CPUExecutionProvider"])
        loaded = _rss_gb()
        run = lambda: session.run(None, {"pixel_values": pixels, "image_grid_thw": grid})  # noqa: E731
    else:
        import torch

        from genai_qwen3vl.model.spec import Qwen3VLSpec

        torch.set_num_threads(os.cpu_count() or 1)
        from genai_qwen3vl.export.vision import build_vision_model

        # transformers' vision tower with its weights only, run with sdpa attention
        visual = build_vision_model(checkpoint, Qwen3VLSpec.from_checkpoint(checkpoint)).visual
        visual.config._attn_implementation = "sdpa"
        loaded = _rss_gb()
        pv, g = torch.from_numpy(pixels), torch.from_numpy(grid)

        def run():
            with torch.no_grad():
                visual(pv, grid_thw=g)

    seconds = _median_time(run, repeats)
    return {"ms": seconds * 1000, "peak_gb": _peak_gb(), "loaded_gb": loaded, "patches": int(np.prod(grid))}


def _chat_prompt(model_dir: Path, with_image: bool, text: str) -> str:
    from genai_qwen3vl.runtime.processor import Qwen3VLProcessor

    content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": text}]
    return Qwen3VLProcessor(model_dir).apply_chat_template([{"role": "user", "content": content}])


def _long_text(model_dir: Path, tokens: int) -> str:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    words = "the quick brown fox jumps over the lazy dog while the cat watches".split()
    text, i = "", 0
    while len(tok.encode(_chat_prompt(model_dir, False, text)).ids) < tokens:
        text += words[i % len(words)] + " "
        i += 1
    return text


def _og_generator(model_dir: Path, prompt: str, images, max_new: int):
    import onnxruntime_genai as og

    from genai_qwen3vl.runtime.processor import Qwen3VLProcessor

    model = og.Model(str(model_dir))
    processor = Qwen3VLProcessor(model_dir)

    def start():
        inputs = processor(prompt, images=images)
        n = int(inputs["input_ids"].shape()[-1])
        params = og.GeneratorParams(model)
        params.set_search_options(do_sample=False, max_length=n + max_new, min_length=n + max_new)
        generator = og.Generator(model, params)
        generator.set_inputs(inputs)
        return generator, n

    return start


def measure_og(kind: str, model_dir: str, repeats: int) -> dict:
    from genai_qwen3vl.testing.media import make_picture

    model_dir = Path(model_dir)
    if kind in ("ttft", "prefill"):  # time to the first token: an image prompt, or a long text one
        if kind == "ttft":
            prompt, images = _chat_prompt(model_dir, True, "Describe this image in detail."), [make_picture(*TTFT_IMAGE, 2)]
        else:
            prompt, images = _chat_prompt(model_dir, False, _long_text(model_dir, PREFILL_PROMPT_TOKENS)), []
        start = _og_generator(model_dir, prompt, images, 1)
        state = {}

        def first():
            generator, state["n"] = start()
            generator.generate_next_token()

        seconds = _median_time(first, repeats)
        return {"ms": seconds * 1000, "prompt_tokens": state["n"], "peak_gb": _peak_gb()}
    prompt = _chat_prompt(model_dir, False, _long_text(model_dir, DECODE_PROMPT_TOKENS))
    start = _og_generator(model_dir, prompt, [], DECODE_STEPS + 1)
    rates = []
    for _ in range(repeats + 1):
        generator, n = start()
        generator.generate_next_token()
        t0 = time.perf_counter()
        for _ in range(DECODE_STEPS):
            generator.generate_next_token()
        rates.append(DECODE_STEPS / (time.perf_counter() - t0))
    return {"tokens_per_s": statistics.median(rates[1:]), "prompt_tokens": n, "peak_gb": _peak_gb()}


def measure_hf(kind: str, model_dir: str, checkpoint: str, repeats: int) -> dict:
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoProcessor

    from genai_qwen3vl.model.spec import Qwen3VLSpec
    from genai_qwen3vl.testing.media import make_picture

    torch.set_num_threads(os.cpu_count() or 1)
    model_dir = Path(model_dir)
    attn = "sdpa" if kind in ("ttft", "prefill") else "eager"
    arch = Qwen3VLSpec.from_checkpoint(checkpoint).arch  # Qwen3VL or Qwen3VLMoe ForConditionalGeneration
    model = arch.transformers_class(arch.hf_class).from_pretrained(checkpoint, dtype=torch.float32, attn_implementation=attn).eval()
    processor = AutoProcessor.from_pretrained(checkpoint)
    processor.image_processor = AutoImageProcessor.from_pretrained(checkpoint, backend="pil")
    if kind in ("ttft", "prefill"):  # as measure_og: an image prompt, or a long text one
        if kind == "ttft":
            prompt = _chat_prompt(model_dir, True, "Describe this image in detail.")
            enc = processor(text=[prompt], images=[Image.fromarray(make_picture(*TTFT_IMAGE, 2))], return_tensors="pt")
        else:
            enc = processor(text=[_chat_prompt(model_dir, False, _long_text(model_dir, PREFILL_PROMPT_TOKENS))], return_tensors="pt")

        def first():
            with torch.no_grad():
                model.generate(**enc, max_new_tokens=1, do_sample=False)

        seconds = _median_time(first, repeats)
        return {"ms": seconds * 1000, "prompt_tokens": int(enc["input_ids"].shape[1]), "peak_gb": _peak_gb()}
    prompt = _chat_prompt(model_dir, False, _long_text(model_dir, DECODE_PROMPT_TOKENS))
    enc = processor(text=[prompt], return_tensors="pt")

    def gen(steps):
        with torch.no_grad():
            model.generate(**enc, max_new_tokens=steps, min_new_tokens=steps, do_sample=False)

    rates = []
    for _ in range(repeats + 1):
        t1 = _median_time(lambda: gen(1), 1, warmup=0)
        tn = _median_time(lambda: gen(DECODE_STEPS + 1), 1, warmup=0)
        rates.append(DECODE_STEPS / (tn - t1))
    return {"tokens_per_s": statistics.median(rates[1:]), "prompt_tokens": int(enc["input_ids"].shape[1]), "peak_gb": _peak_gb()}


def measure_bandwidth() -> dict:
    """Read bandwidth: the best pass over 1 GiB of float32 of several read kernels (torch sum,
    max and dot, numpy sum) at 1 and 2 threads and at every core. A roofline must not be beaten
    by the engines it bounds; one kernel at one thread count (the earlier 2-thread torch.sum)
    understated the machine (og fp32 read its weights at 1.24x that probe). Reported: the best
    figure (``gb_s``) and each kernel's."""
    import torch

    x = torch.ones(2**28, dtype=torch.float32)  # 1 GiB
    n = x.numpy()
    kernels = {
        "torch.sum": lambda: x.sum(),
        "torch.amax": lambda: x.amax(),
        "torch.dot": lambda: torch.dot(x, x),
        "numpy.sum": lambda: n.sum(),
    }
    results = {}
    for name, kernel in kernels.items():
        for count in sorted({1, 2, os.cpu_count() or 1}):
            torch.set_num_threads(count)
            kernel()
            best = float("inf")
            for _ in range(7):
                start = time.perf_counter()
                kernel()
                best = min(best, time.perf_counter() - start)
            results[f"{name}, {count} threads"] = x.numel() * 4 / best / 1e9
    return {"gb_s": max(results.values()), "kernels": results}


def weight_bytes(model_path: Path) -> int:
    """Bytes of every initializer of a graph: what one decode step reads (KV cache aside)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    total = 0
    for t in model.graph.initializer:
        info = {e.key: e.value for e in t.external_data}
        if "length" in info:
            total += int(info["length"])
        else:
            total += len(t.raw_data)
    # cos/sin caches are indexed, not streamed, per token
    cache = sum(
        int({e.key: e.value for e in t.external_data}.get("length", len(t.raw_data)))
        for t in model.graph.initializer
        if t.name in ("cos_cache", "sin_cache")
    )
    return total - cache


def measure_logits(model_dir: str, steps: int, forced: list[int] | None, out_file: str) -> dict:
    """og's next-token logits over ``steps`` steps of a text prompt: greedy, or (``forced``) fed
    the given tokens, so that two models are compared on the same contexts. Saved to ``out_file``."""
    import numpy as np
    import onnxruntime_genai as og

    model_dir = Path(model_dir)
    prompt = _chat_prompt(model_dir, False, _long_text(model_dir, DECODE_PROMPT_TOKENS))
    model = og.Model(str(model_dir))
    from genai_qwen3vl.runtime.processor import Qwen3VLProcessor

    inputs = Qwen3VLProcessor(model_dir)(prompt)
    params = og.GeneratorParams(model)
    n = int(inputs["input_ids"].shape()[-1])
    params.set_search_options(do_sample=False, max_length=n + steps + 1, min_length=n + steps + 1)
    generator = og.Generator(model, params)
    generator.set_inputs(inputs)
    tokens, logits = [], []
    for step in range(steps):
        if forced is None or step == 0:
            generator.generate_next_token()
        else:
            generator.append_tokens(np.asarray([forced[step - 1]], dtype=np.int32))
        logits.append(np.array(generator.get_output("logits")[0, -1], dtype=np.float32))
        tokens.append(int(np.argmax(logits[-1])))
    np.save(out_file, np.stack(logits))
    return {"tokens": tokens}


def int4_cost(fp32_dir: Path, int4_dir: Path, work: Path, steps: int = DECODE_STEPS) -> dict:
    """KL(fp32 || int4) of the next-token distributions and top-1 agreement, int4 fed the fp32
    model's greedy tokens (the same contexts at every step)."""
    import numpy as np

    ref = child("logits", str(fp32_dir), steps, None, str(work / "fp32_logits.npy"))
    child("logits", str(int4_dir), steps, ref["tokens"], str(work / "int4_logits.npy"))
    p_logits, q_logits = np.load(work / "fp32_logits.npy"), np.load(work / "int4_logits.npy")

    def log_softmax(x):
        x = x.astype(np.float64) - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))

    log_p, log_q = log_softmax(p_logits), log_softmax(q_logits)
    kl = (np.exp(log_p) * (log_p - log_q)).sum(-1)
    return {
        "steps": steps,
        "kl_mean": float(kl.mean()),
        "kl_max": float(kl.max()),
        "top1_agreement": float((p_logits.argmax(-1) == q_logits.argmax(-1)).mean()),
    }


MEASURES = {"vision": measure_vision, "og": measure_og, "hf": measure_hf, "bandwidth": measure_bandwidth, "logits": measure_logits}


def child(name: str, *args) -> dict:
    """Run one measurement in a fresh process and return its JSON."""
    out = subprocess.run(
        [sys.executable, __file__, "--_child", name, json.dumps(args)], capture_output=True, text=True
    )
    if out.returncode:
        raise SystemExit(f"{name}{args} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- orchestration
def run(layers: int, vision_layers: int, repeats: int, workdir: Path) -> dict:
    from benchmarks.export_memory import measure as measure_export
    from benchmarks.models import cached_checkpoint, checkpoint_bytes, qwen3vl_2b_shape

    ckpt = cached_checkpoint(qwen3vl_2b_shape(layers, vision_layers))
    print(f"checkpoint: {ckpt.name} ({checkpoint_bytes(ckpt) / 2**30:.2f} GB bf16)", flush=True)
    results: dict = {"config": {"layers": layers, "vision_layers": vision_layers, "threads": os.cpu_count()}}
    exports = {}
    for precision in ("fp32", "int4"):
        r = measure_export(ckpt, precision, keep=workdir / precision)
        exports[precision] = r
        print(f"export {precision}: {r['seconds']} s, peak RSS {r['peak_rss_gb']} GB", flush=True)
    results["export"] = exports
    fp32, int4 = workdir / "fp32", workdir / "int4"

    vision = {}
    for size in VISION_SIZES:
        o = child("vision", "onnx", str(fp32), str(ckpt), size, repeats)
        t = child("vision", "torch", str(fp32), str(ckpt), size, repeats)
        vision[size] = {"onnx_ms": o["ms"], "torch_ms": t["ms"], "onnx_peak_gb": o["peak_gb"], "torch_peak_gb": t["peak_gb"],
                        "onnx_loaded_gb": o["loaded_gb"], "torch_loaded_gb": t["loaded_gb"], "patches": o["patches"]}
        print(f"vision {size}: onnx {o['ms']:.0f} ms / {o['peak_gb']:.2f} GB, torch {t['ms']:.0f} ms / {t['peak_gb']:.2f} GB", flush=True)
    results["vision_by_size"] = vision
    results["vision"] = {k: vision["1280x720"][k] for k in ("onnx_ms", "torch_ms", "onnx_peak_gb", "torch_peak_gb")}

    og_ttft = child("og", "ttft", str(fp32), max(1, repeats // 2))
    og_int4_ttft = child("og", "ttft", str(int4), max(1, repeats // 2))
    hf_ttft = child("hf", "ttft", str(fp32), str(ckpt), max(1, repeats // 2))
    results["ttft_ms"] = {"og": og_ttft["ms"], "og_int4": og_int4_ttft["ms"], "hf": hf_ttft["ms"],
                          "prompt_tokens": og_ttft["prompt_tokens"]}
    print(f"TTFT ({og_ttft['prompt_tokens']} tokens): og fp32 {og_ttft['ms']:.0f} ms, og int4 {og_int4_ttft['ms']:.0f} ms, "
          f"hf {hf_ttft['ms']:.0f} ms", flush=True)

    runs = {
        "og_fp32": child("og", "decode", str(fp32), repeats),
        "og_int4": child("og", "decode", str(int4), repeats),
        "hf_fp32": child("hf", "decode", str(fp32), str(ckpt), repeats),
    }
    decode = {k: v["tokens_per_s"] for k, v in runs.items()}
    results["decode_tokens_per_s"] = decode
    # each engine's own peak (VmHWM of its process) while decoding
    results["peak_decode_gb"] = {k: v["peak_gb"] for k, v in runs.items()}
    print("decode tok/s: " + ", ".join(f"{k} {v:.2f}" for k, v in decode.items()), flush=True)

    results["int4_vs_fp32"] = int4_cost(fp32, int4, workdir)
    c = results["int4_vs_fp32"]
    print(f"int4 vs fp32 over {c['steps']} steps: KL mean {c['kl_mean']:.3g} max {c['kl_max']:.3g}, "
          f"top-1 agreement {c['top1_agreement']:.0%}", flush=True)

    probe = child("bandwidth")
    bandwidth = probe["gb_s"]
    results["bandwidth_kernels_gb_s"] = probe["kernels"]
    bytes_fp32, bytes_int4 = weight_bytes(fp32 / "model.onnx"), weight_bytes(int4 / "model.onnx")
    results["roofline"] = {
        "bandwidth_gb_s": bandwidth,
        "bytes_per_token_fp32": bytes_fp32,
        "bytes_per_token_int4": bytes_int4,
        "og_fp32_fraction": decode["og_fp32"] * bytes_fp32 / 1e9 / bandwidth,
        "og_int4_fraction": decode["og_int4"] * bytes_int4 / 1e9 / bandwidth,
        "hf_fp32_fraction": decode["hf_fp32"] * bytes_fp32 / 1e9 / bandwidth,
    }
    results["ratios"] = {
        "og_fp32_decode_vs_hf": decode["og_fp32"] / decode["hf_fp32"],
        "og_int4_decode_vs_hf": decode["og_int4"] / decode["hf_fp32"],
        "og_ttft_vs_hf": og_ttft["ms"] / hf_ttft["ms"],
        "vision_speedup_1280x720": vision["1280x720"]["torch_ms"] / vision["1280x720"]["onnx_ms"],
        "vision_memory_ratio_1280x720": vision["1280x720"]["onnx_peak_gb"] / vision["1280x720"]["torch_peak_gb"],
    }
    return results


def run_moe(depths: list[int], repeats: int, workdir: Path) -> dict:
    """Qwen3-VL-30B-A3B's widths cut to ``depths`` text layers (vision as released): export time
    and peak RSS, decode tokens/s (og fp32, og int4, transformers fp32) and a text prefill, per
    depth; then what the full 48 layers would need, extrapolated linearly in the depth."""
    import shutil

    from benchmarks.export_memory import measure as measure_export
    from benchmarks.models import cached_checkpoint, checkpoint_bytes, qwen3vl_30b_a3b_shape

    results: dict = {"config": {"shape": "qwen3vl-30b-a3b", "depths": depths, "threads": os.cpu_count()}, "depths": {}}
    for depth in depths:
        ckpt = cached_checkpoint(qwen3vl_30b_a3b_shape(depth))
        r: dict = {"checkpoint_gb": checkpoint_bytes(ckpt) / 2**30, "export": {}}
        print(f"checkpoint: {ckpt.name} ({r['checkpoint_gb']:.2f} GB bf16)", flush=True)
        for precision in ("int4", "fp32"):
            e = measure_export(ckpt, precision, keep=workdir / precision)
            r["export"][precision] = e
            print(f"  export {precision}: {e['seconds']} s, peak RSS {e['peak_rss_gb']} GB "
                  f"(decoder stage {e['stage_peak_rss_gb'].get('decoder')} GB), output {e['output_gb']} GB", flush=True)
        fp32, int4 = workdir / "fp32", workdir / "int4"
        og_int4 = child("og", "decode", str(int4), repeats)
        og_fp32 = child("og", "decode", str(fp32), repeats)
        hf = child("hf", "decode", str(fp32), str(ckpt), repeats)
        # the int4 export with every MatMulNBits and QMoE at accuracy_level 1 (fp32 activations)
        from genai_qwen3vl.verify.validate import folder_variant, with_accuracy_level

        exact = folder_variant(int4, workdir, replace={"model.onnx": with_accuracy_level(
            int4 / "model.onnx", 1, Path(tempfile.mkdtemp(dir=workdir)))})
        og_int4_l1 = child("og", "decode", str(exact), repeats)
        r["decode_tokens_per_s"] = {"og_fp32": og_fp32["tokens_per_s"], "og_int4": og_int4["tokens_per_s"],
                                    "og_int4_level1": og_int4_l1["tokens_per_s"], "hf_fp32": hf["tokens_per_s"]}
        r["peak_decode_gb"] = {"og_fp32": og_fp32["peak_gb"], "og_int4": og_int4["peak_gb"],
                               "og_int4_level1": og_int4_l1["peak_gb"], "hf_fp32": hf["peak_gb"]}
        print("  decode tok/s: " + ", ".join(f"{k} {v:.2f}" for k, v in r["decode_tokens_per_s"].items()), flush=True)
        prefill = {"og_int4": child("og", "prefill", str(int4), repeats), "og_fp32": child("og", "prefill", str(fp32), repeats),
                   "hf_fp32": child("hf", "prefill", str(fp32), str(ckpt), repeats)}
        r["prefill_ms"] = {k: v["ms"] for k, v in prefill.items()}
        r["prefill_tokens"] = prefill["og_int4"]["prompt_tokens"]
        print(f"  prefill ({r['prefill_tokens']} tokens) ms: " + ", ".join(f"{k} {v:.0f}" for k, v in r["prefill_ms"].items()), flush=True)
        r["decoder_weight_bytes"] = {"fp32": weight_bytes(fp32 / "model.onnx"), "int4": weight_bytes(int4 / "model.onnx")}
        results["depths"][str(depth)] = r
        for folder in workdir.iterdir():
            shutil.rmtree(folder)
    results["full_depth"] = extrapolate(results["depths"], 48)
    return results


def extrapolate(by_depth: dict, layers: int) -> dict:
    """Linear in the number of text layers through the two deepest measurements: seconds per
    decoded token, output size, decode peak RSS; the export's peak RSS as measured (it streams)."""
    (d1, a), (d2, b) = sorted(((int(k), v) for k, v in by_depth.items()))[-2:]

    def line(x1: float, x2: float) -> float:
        return x1 + (x2 - x1) * (layers - d1) / (d2 - d1)

    full: dict = {"layers": layers, "decode_tokens_per_s": {}, "peak_decode_gb": {}, "output_gb": {}, "export_peak_rss_gb": {}}
    for key in a["decode_tokens_per_s"]:
        full["decode_tokens_per_s"][key] = 1 / line(1 / a["decode_tokens_per_s"][key], 1 / b["decode_tokens_per_s"][key])
        full["peak_decode_gb"][key] = line(a["peak_decode_gb"][key], b["peak_decode_gb"][key])
    for precision in a["export"]:
        full["output_gb"][precision] = line(a["export"][precision]["output_gb"], b["export"][precision]["output_gb"])
        full["export_peak_rss_gb"][precision] = max(a["export"][precision]["peak_rss_gb"], b["export"][precision]["peak_rss_gb"])
    full["checkpoint_gb"] = line(a["checkpoint_gb"], b["checkpoint_gb"])
    return full


def moe_markdown(results: dict) -> str:
    c, full = results["config"], results["full_depth"]
    lines = [
        f"Random checkpoint with Qwen3-VL-30B-A3B's widths (2048 wide, 128 experts of 768, top 8, 32 heads / 4 kv heads; "
        f"vision as released, 27 blocks), cut to {' and '.join(map(str, c['depths']))} text layers; {c['threads']} CPU threads; "
        "medians after warm-up, all measured in one run.",
        "",
        "| text layers | checkpoint (bf16) | export int4: time, peak RSS (decoder stage) | export fp32: time, peak RSS (decoder stage) "
        "| decode tok/s og int4 | og fp32 | transformers fp32 | og fp32 / transformers | prefill og int4 | og fp32 | transformers fp32 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for depth, r in results["depths"].items():
        e4, e32, d, p = r["export"]["int4"], r["export"]["fp32"], r["decode_tokens_per_s"], r["prefill_ms"]
        x4, x32 = e4["stage_peak_rss_gb"].get("decoder"), e32["stage_peak_rss_gb"].get("decoder")
        lines.append(
            f"| {depth} | {r['checkpoint_gb']:.2f} GB | {e4['seconds']:.0f} s, {e4['peak_rss_gb']} GB ({x4} GB) "
            f"| {e32['seconds']:.0f} s, {e32['peak_rss_gb']} GB ({x32} GB) "
            f"| {d['og_int4']:.2f} | {d['og_fp32']:.2f} | {d['hf_fp32']:.2f} | {d['og_fp32'] / d['hf_fp32']:.2f}x "
            f"| {p['og_int4']:.0f} ms | {p['og_fp32']:.0f} ms | {p['hf_fp32']:.0f} ms |"
        )
    d, m, o, x = full["decode_tokens_per_s"], full["peak_decode_gb"], full["output_gb"], full["export_peak_rss_gb"]
    levels = ", ".join(f"{k} layers {r['decode_tokens_per_s']['og_int4_level1']:.2f}" for k, r in results["depths"].items())
    lines += [
        "",
        f"og int4 with accuracy_level 1 (fp32 activations in MatMulNBits and QMoE) decodes at: {levels} tokens/s.",
        "",
        f"Prefill: a {next(iter(results['depths'].values()))['prefill_tokens']}-token text prompt, time to the first token.",
        "",
        f"Extrapolated to the full {full['layers']} layers (linear in the depth through the measurements above): "
        f"checkpoint {full['checkpoint_gb']:.1f} GB; int4 export {o['int4']:.1f} GB on disk, decoding at "
        f"{d['og_int4']:.2f} tokens/s in {m['og_int4']:.1f} GB; fp32 export {o['fp32']:.1f} GB, {d['og_fp32']:.2f} tokens/s "
        f"in {m['og_fp32']:.1f} GB (transformers fp32 {d['hf_fp32']:.2f} tokens/s in {m['hf_fp32']:.1f} GB). The export's "
        f"peak RSS does not grow with the depth: int4 {x['int4']} GB, fp32 {x['fp32']} GB.",
    ]
    return "\n".join(lines) + "\n"


def markdown(results: dict) -> str:
    c, v, t, d, r, q = (results[k] for k in ("config", "vision_by_size", "ttft_ms", "decode_tokens_per_s", "roofline", "ratios"))
    lines = [
        f"Random checkpoint with Qwen3-VL-2B's widths, {c['layers']} text layers, {c['vision_layers']} vision blocks; "
        f"{c['threads']} CPU threads; medians after warm-up, all measured in one run.",
        "",
        "| measure | genai-qwen3vl (onnxruntime / og) | transformers | ratio |",
        "|---|---|---|---|",
    ]
    for size, m in v.items():
        speedup, memory = m["torch_ms"] / m["onnx_ms"], m["onnx_peak_gb"] / m["torch_peak_gb"]
        latency = f"{m['onnx_ms']:.0f} ms | {m['torch_ms']:.0f} ms | {speedup:.2f}x faster"
        lines.append(f"| vision {size} ({m['patches']} patches), latency | {latency} |")
        lines.append(f"| vision {size}, peak RSS | {m['onnx_peak_gb']:.2f} GB | {m['torch_peak_gb']:.2f} GB | {memory:.2f}x |")
    ttft = f"{t['og']:.0f} ms | {t['hf']:.0f} ms | {q['og_ttft_vs_hf']:.2f}x the time"
    lines.append(f"| time to first token, {t['prompt_tokens']}-token image prompt | {ttft} |")
    if "og_int4" in t:
        lines.append(f"| time to first token, int4 export | {t['og_int4']:.0f} ms | (fp32) {t['hf']:.0f} ms | "
                     f"{t['og_int4'] / t['hf']:.2f}x the time |")
    lines.append(f"| decode fp32 (tokens/s) | {d['og_fp32']:.2f} | {d['hf_fp32']:.2f} | {q['og_fp32_decode_vs_hf']:.2f}x |")
    lines.append(f"| decode int4 (tokens/s) | {d['og_int4']:.2f} | (fp32) {d['hf_fp32']:.2f} | {q['og_int4_decode_vs_hf']:.2f}x |")
    lines += [
        "",
        f"Read bandwidth (the best of several read kernels and thread counts over 1 GiB): {r['bandwidth_gb_s']:.1f} GB/s. "
        "Weights read per decoded token: "
        f"fp32 {r['bytes_per_token_fp32'] / 1e9:.2f} GB, int4 {r['bytes_per_token_int4'] / 1e9:.2f} GB. Roofline fraction: "
        f"og fp32 {r['og_fp32_fraction']:.2f}, og int4 {r['og_int4_fraction']:.2f}, transformers fp32 {r['hf_fp32_fraction']:.2f}.",
        "",
    ]
    if "int4_vs_fp32" in results:
        k = results["int4_vs_fp32"]
        lines += [
            f"int4 (accuracy_level 4) against fp32, fed the fp32 model's greedy tokens for {k['steps']} steps: "
            f"KL(fp32 || int4) mean {k['kl_mean']:.3g}, max {k['kl_max']:.3g}; top-1 agreement {k['top1_agreement']:.0%}.",
            "",
        ]
    lines += [
        "| export | time | peak RSS |",
        "|---|---|---|",
    ]
    for p, e in results["export"].items():
        lines.append(f"| {p} | {e['seconds']} s | {e['peak_rss_gb']} GB |")
    return "\n".join(lines) + "\n"


def chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    d = results["decode_tokens_per_s"]
    colors = ["grey", "tab:blue", "tab:green"]
    axes[0].bar(["transformers\nfp32", "og fp32", "og int4"], [d["hf_fp32"], d["og_fp32"], d["og_int4"]], color=colors)
    axes[0].set_title("decode (tokens/s, higher is better)")
    t = results["ttft_ms"]
    axes[1].bar(["transformers", "og"], [t["hf"] / 1000, t["og"] / 1000], color=["grey", "tab:blue"])
    axes[1].set_title(f"time to first token, {t['prompt_tokens']} tokens (s)")
    v = results["vision_by_size"]
    sizes = list(v)
    x = range(len(sizes))
    axes[2].bar([i - 0.2 for i in x], [v[s]["torch_ms"] / 1000 for s in sizes], 0.4, label="transformers", color="grey")
    axes[2].bar([i + 0.2 for i in x], [v[s]["onnx_ms"] / 1000 for s in sizes], 0.4, label="onnxruntime", color="tab:blue")
    axes[2].set_xticks(list(x), sizes)
    axes[2].set_title("vision encoder (s)")
    axes[2].legend()
    c = results["config"]
    fig.suptitle(f"Qwen3-VL-2B widths, {c['layers']} text layers, {c['vision_layers']} vision blocks, {c['threads']} CPU threads")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=28)
    parser.add_argument("--vision-layers", type=int, default=24)
    parser.add_argument("--quick", action="store_true", help="8 text layers, 8 vision blocks, fewer repeats")
    parser.add_argument("--repeats", type=int, default=None)
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
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="genai_qwen3vl-bench-") as work:
        if args.moe is not None:
            results = run_moe(args.moe or [2, 4], args.repeats or 3, Path(work))
        else:
            layers, vision_layers = (8, 8) if args.quick else (args.layers, args.vision_layers)
            results = run(layers, vision_layers, args.repeats or (3 if args.quick else 5), Path(work))
    results["benchmark_seconds"] = round(time.perf_counter() - start)
    text = moe_markdown(results) if args.moe is not None else markdown(results)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    if args.docs:
        docs = ROOT / "docs"
        docs.mkdir(exist_ok=True)
        if args.moe is not None:
            (docs / "moe_benchmarks.md").write_text("# Benchmarks: Qwen3-VL-MoE\n\n" + text)
        else:
            (docs / "benchmarks.md").write_text("# Benchmarks\n\n" + text)
            chart(results, docs / "benchmarks.png")


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--_child":
        name, args = sys.argv[2], json.loads(sys.argv[3]) if len(sys.argv) > 3 else []
        print(json.dumps(MEASURES[name](*args)))
    else:
        main()
