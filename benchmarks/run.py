"""Benchmarks against transformers and the memory-bandwidth limit, measured side by side in one run.

    python benchmarks/run.py --quick                 # 8 text layers, 8 vision blocks: < 15 min on 2 cores
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
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VISION_SIZES = {"448x448": (448, 448), "1280x720": (720, 1280)}
TTFT_IMAGE = (720, 1280)  # 880 image tokens + the chat text: about 1000 prompt tokens
DECODE_PROMPT_TOKENS = 128
TTFT_TEXT = "Describe this image in detail."  # the text after the image in the time-to-first-token prompt
PREFILL_PROMPT_TOKENS = 512  # the text prompt of the mixture-of-experts prefill measurement
LLAMA_PREFILL_TOKENS = 900  # the text prompt of the prefill measured beside llama.cpp
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
    return partial(og_greedy_start, model, processor, prompt, images, max_new)


def og_greedy_start(model, processor, prompt: str, images, max_new: int):
    """A greedy og.Generator over ``prompt`` with its inputs set, which makes exactly ``max_new``
    tokens; returns it and the prompt's length."""
    import onnxruntime_genai as og

    inputs = processor(prompt, images=images)
    n = int(inputs["input_ids"].shape()[-1])
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=n + max_new, min_length=n + max_new)
    generator = og.Generator(model, params)
    generator.set_inputs(inputs)
    return generator, n


def measure_og(kind: str, model_dir: str, repeats: int, prompt_tokens: int = PREFILL_PROMPT_TOKENS) -> dict:
    """"ttft": an image prompt, "prefill": a text prompt of about ``prompt_tokens`` tokens (time
    to the first token); "decode": tokens/s after a DECODE_PROMPT_TOKENS-token prompt."""
    from genai_qwen3vl.testing.media import make_picture

    model_dir = Path(model_dir)
    if kind in ("ttft", "prefill"):  # time to the first token: an image prompt, or a long text one
        if kind == "ttft":
            prompt, images = _chat_prompt(model_dir, True, TTFT_TEXT), [make_picture(*TTFT_IMAGE, 2)]
        else:
            prompt, images = _chat_prompt(model_dir, False, _long_text(model_dir, prompt_tokens)), []
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
    arch = Qwen3VLSpec.from_checkpoint(checkpoint).arch  # Qwen3VL or Qwen3VLMoe ForConditionalGeneration
    model = arch.transformers_class(arch.hf_class).from_pretrained(checkpoint, dtype=torch.float32).eval()  # its default attention (sdpa)
    processor = AutoProcessor.from_pretrained(checkpoint)
    processor.image_processor = AutoImageProcessor.from_pretrained(checkpoint, backend="pil")
    if kind in ("ttft", "prefill"):  # as measure_og: an image prompt, or a long text one
        if kind == "ttft":
            prompt = _chat_prompt(model_dir, True, TTFT_TEXT)
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


def measure_logits(model_dir: str, steps: int, forced: list[int] | None, out_file: str, image: bool = False) -> dict:
    """og's next-token logits over ``steps`` steps of a text prompt (``image``: the time-to-first-
    token image prompt): greedy, or (``forced``) fed the given tokens, so that two models are
    compared on the same contexts. Saved to ``out_file``."""
    import numpy as np
    import onnxruntime_genai as og

    from genai_qwen3vl.testing.media import make_picture

    model_dir = Path(model_dir)
    if image:
        prompt, images = _chat_prompt(model_dir, True, TTFT_TEXT), [make_picture(*TTFT_IMAGE, 2)]
    else:
        prompt, images = _chat_prompt(model_dir, False, _long_text(model_dir, DECODE_PROMPT_TOKENS)), []
    model = og.Model(str(model_dir))
    from genai_qwen3vl.runtime.processor import Qwen3VLProcessor

    inputs = Qwen3VLProcessor(model_dir)(prompt, images=images)
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


def int4_cost(fp32_dir: Path, int4_dir: Path, work: Path, steps: int = DECODE_STEPS, image: bool = False) -> dict:
    """KL(fp32 || int4) of the next-token distributions and top-1 agreement, int4 fed the fp32
    model's greedy tokens (the same contexts at every step); any two exports of one checkpoint
    compare so (``image``: on the image prompt)."""
    import numpy as np

    ref = child("logits", str(fp32_dir), steps, None, str(work / "fp32_logits.npy"), image)
    child("logits", str(int4_dir), steps, ref["tokens"], str(work / "int4_logits.npy"), image)
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


# --------------------------------------------------------------------------- weight error
from genai_qwen3vl.verify.reference import EMBED_TOKENS  # noqa: E402


def tensor_class(name: str) -> str:
    """q, k, v, o, gate, up, down, lm_head or embedding, from a transformers text weight name."""
    if name == "lm_head.weight":
        return "lm_head"
    if name == EMBED_TOKENS:
        return "embedding"
    found = re.search(r"\.(q|k|v|o|gate|up|down)_proj\.weight$", name)
    if not found:
        raise ValueError(f"{name}: not a text projection, LM head or embedding")
    return found.group(1)


def _checkpoint_tensor(checkpoint: Path):
    """name -> float32 array of the checkpoint's safetensors shards (bf16 widened exactly); a
    tied checkpoint's lm_head.weight is its embedding table."""
    from safetensors import safe_open

    shards = [safe_open(str(f), "pt") for f in sorted(checkpoint.glob("*.safetensors"))]
    where = {name: shard for shard in shards for name in shard.keys()}

    def get(name: str):
        if name == "lm_head.weight" and name not in where:
            name = EMBED_TOKENS
        return where[name].get_tensor(name).float().numpy()

    return get


def _squares(w, ref, rows: int = 4096) -> tuple[float, float]:
    """(sum (w - ref)^2, sum ref^2) in float64, a block of rows at a time."""
    import numpy as np

    w, ref = w.reshape(w.shape[0], -1), ref.reshape(ref.shape[0], -1)
    err = norm = 0.0
    for i in range(0, len(ref), rows):
        r = ref[i:i + rows].astype(np.float64)
        err += float(np.square(w[i:i + rows] - r).sum())
        norm += float(np.square(r).sum())
    return err, norm


def weight_error(weights: Mapping, checkpoint: Path) -> dict[str, float]:
    """Relative RMS error ||W_deq - W|| / ||W|| of dequantized text weights ({transformers name:
    float32 array in transformers' layout}) against the checkpoint's, over each tensor class's
    tensors together; "layers": the decoder layers' projections (q, k, v, o, gate, up, down);
    "all": every class but the embedding table (which a decoded token only indexes), i.e. the
    matrices each token is multiplied by, the LM head included."""
    get = _checkpoint_tensor(Path(checkpoint))
    sums: dict[str, list[float]] = {}
    for name, w in weights.items():
        ref = get(name)
        if w.shape != ref.shape:
            raise ValueError(f"{name}: dequantized shape {w.shape}, checkpoint {ref.shape}")
        err, norm = _squares(w, ref)
        cls = tensor_class(name)
        for key in {"embedding": (cls,), "lm_head": (cls, "all")}.get(cls, (cls, "layers", "all")):
            total = sums.setdefault(key, [0.0, 0.0])
            total[0] += err
            total[1] += norm
    return {k: (e / n) ** 0.5 for k, (e, n) in sorted(sums.items())}


def measure_weight_error(engine: str, path: str, checkpoint: str, llama_root: str | None = None) -> dict:
    """The weight error of an og export's quantized text weights ("og": its folder) or of a GGUF
    text model ("gguf", read with the llama.cpp tree's gguf-py); for a GGUF, also each class's
    tensor types."""
    if engine == "og":
        from genai_qwen3vl.verify.reference import quantized_text_weights

        return {"error": weight_error(quantized_text_weights(Path(path)), Path(checkpoint))}
    from benchmarks.llama_cpp import GGUFWeights

    weights = GGUFWeights(Path(path), Path(llama_root))
    types: dict[str, set] = {}
    for name in weights:
        types.setdefault(tensor_class(name), set()).add(weights.type_of(name))
    return {"error": weight_error(weights, Path(checkpoint)), "types": {k: "/".join(sorted(v)) for k, v in sorted(types.items())}}


def measure_features(model_dir: str, size: str, out_file: str) -> dict:
    """The vision graph's features for the picture measure_vision encodes, saved to ``out_file``."""
    import numpy as np
    import onnxruntime as ort

    pixels, grid = _pixels(Path(model_dir), VISION_SIZES[size])
    session = ort.InferenceSession(str(Path(model_dir) / "vision.onnx"), providers=["CPUExecutionProvider"])
    np.save(out_file, session.run(None, {"pixel_values": pixels, "image_grid_thw": grid})[0])
    return {}


def feature_error(ref_file: Path, ours_file: Path, sets: int) -> dict:
    """Relative RMS of the features against the reference's, per feature set (the merger's, then
    each DeepStack merger's, side by side on the last axis), and the cosine of the whole."""
    import numpy as np

    ref, ours = np.load(ref_file).astype(np.float64), np.load(ours_file).astype(np.float64)
    width = ref.shape[-1] // sets
    rel = [float(np.sqrt(((ours - ref)[:, i * width:(i + 1) * width] ** 2).sum() / (ref[:, i * width:(i + 1) * width] ** 2).sum()))
           for i in range(sets)]
    cosine = float((ours * ref).sum() / np.sqrt((ours**2).sum() * (ref**2).sum()))
    return {"relative_rms": rel, "cosine": cosine}


MEASURES = {"vision": measure_vision, "features": measure_features, "og": measure_og, "hf": measure_hf,
            "bandwidth": measure_bandwidth, "logits": measure_logits, "weight_error": measure_weight_error}


def child(name: str, *args) -> dict:
    """Run one measurement in a fresh process and return its JSON."""
    out = subprocess.run(
        [sys.executable, __file__, "--_child", name, json.dumps(args)], capture_output=True, text=True
    )
    if out.returncode:
        raise SystemExit(f"{name}{args} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def interleaved(measures: dict, rounds: int) -> dict[str, dict]:
    """Call every measure once per round, in the order given, so that the engines alternate and
    the machine's drift falls on all alike; per measure, the median of each figure over the rounds."""
    seen: dict[str, list[dict]] = {name: [] for name in measures}
    for _ in range(rounds):
        for name, measure in measures.items():
            seen[name].append(measure())
    return {name: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for name, runs in seen.items()}


# --------------------------------------------------------------------------- orchestration
def run(layers: int, vision_layers: int, repeats: int, workdir: Path, llama=None) -> dict:
    """The benchmark on the 2B shape; ``llama`` (a benchmarks.llama_cpp.LlamaCpp) adds llama.cpp.
    Alone, each engine measures ``repeats`` times in one process. Beside llama.cpp, the engines
    alternate round by round, each measuring once per process (after its warm-up), and every
    figure is the median over ``repeats`` rounds."""
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
    side = LlamaSide(llama, ckpt, workdir) if llama else None
    rounds, inner = (repeats, 1) if side else (1, repeats)

    vision = {}
    for size in VISION_SIZES:
        m = interleaved({"onnx": partial(child, "vision", "onnx", str(fp32), str(ckpt), size, inner),
                         "torch": partial(child, "vision", "torch", str(fp32), str(ckpt), size, inner),
                         **(side.vision_measures(size) if side else {})}, rounds)
        if side:
            side.take_vision(size, m)
        o, t = m["onnx"], m["torch"]
        vision[size] = {"onnx_ms": o["ms"], "torch_ms": t["ms"], "onnx_peak_gb": o["peak_gb"], "torch_peak_gb": t["peak_gb"],
                        "onnx_loaded_gb": o["loaded_gb"], "torch_loaded_gb": t["loaded_gb"], "patches": o["patches"]}
        print(f"vision {size}: onnx {o['ms']:.0f} ms / {o['peak_gb']:.2f} GB, torch {t['ms']:.0f} ms / {t['peak_gb']:.2f} GB", flush=True)
    results["vision_by_size"] = vision
    results["vision"] = {k: vision["1280x720"][k] for k in ("onnx_ms", "torch_ms", "onnx_peak_gb", "torch_peak_gb")}

    ttft_rounds, ttft_inner = (max(1, repeats // 2), 1) if side else (1, max(1, repeats // 2))
    m = interleaved({"og": partial(child, "og", "ttft", str(fp32), ttft_inner),
                     "og_int4": partial(child, "og", "ttft", str(int4), ttft_inner),
                     "hf": partial(child, "hf", "ttft", str(fp32), str(ckpt), ttft_inner),
                     **(side.ttft_measures() if side else {})}, ttft_rounds)
    if side:
        side.take_ttft(m)
    og_ttft, og_int4_ttft, hf_ttft = m["og"], m["og_int4"], m["hf"]
    results["ttft_ms"] = {"og": og_ttft["ms"], "og_int4": og_int4_ttft["ms"], "hf": hf_ttft["ms"],
                          "prompt_tokens": og_ttft["prompt_tokens"]}
    print(f"TTFT ({og_ttft['prompt_tokens']} tokens): og fp32 {og_ttft['ms']:.0f} ms, og int4 {og_int4_ttft['ms']:.0f} ms, "
          f"hf {hf_ttft['ms']:.0f} ms", flush=True)

    runs = interleaved({"og_fp32": partial(child, "og", "decode", str(fp32), inner),
                        "og_int4": partial(child, "og", "decode", str(int4), inner),
                        "hf_fp32": partial(child, "hf", "decode", str(fp32), str(ckpt), inner),
                        **(side.decode_measures() if side else {})}, rounds)
    if side:
        side.take_decode(runs)
    decode = {k: v["tokens_per_s"] for k, v in runs.items()}
    results["decode_tokens_per_s"] = decode
    # each engine's own peak (VmHWM of its process) while decoding
    results["peak_decode_gb"] = {k: v["peak_gb"] for k, v in runs.items()}
    print("decode tok/s: " + ", ".join(f"{k} {v:.2f}" for k, v in decode.items()), flush=True)

    if side:  # og's prefill beside llama.cpp's: a text prompt of about LLAMA_PREFILL_TOKENS tokens, to the first token
        m = interleaved({"og_fp32": partial(child, "og", "prefill", str(fp32), 1, LLAMA_PREFILL_TOKENS),
                         "og_int4": partial(child, "og", "prefill", str(int4), 1, LLAMA_PREFILL_TOKENS),
                         **side.prefill_measures()}, rounds)
        side.take_prefill(m)
        results["prefill_tokens_per_s"] = {k: v["prompt_tokens"] / v["ms"] * 1000 for k, v in m.items()}
        results["prefill_prompt_tokens"] = m["og_fp32"]["prompt_tokens"]
        print(f"prefill ({results['prefill_prompt_tokens']} tokens) tok/s: "
              + ", ".join(f"{k} {v:.1f}" for k, v in results["prefill_tokens_per_s"].items()), flush=True)

    results["weight_error"] = {"og_int4": child("weight_error", "og", str(int4), str(ckpt))["error"]}
    print("weight error og int4: " + ", ".join(f"{k} {v:.4f}" for k, v in results["weight_error"]["og_int4"].items()), flush=True)
    if side:
        side.weight_error()
        results["llama_cpp"] = side.results
        results["ratios_vs_llama_cpp"] = ratios_vs_llama_cpp(results)

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


class LlamaSide:
    """llama.cpp's half of ``run``: its GGUF files (made once), the measures it adds to each of
    run's interleaved groups (named "llama.cpp FORMAT"), and its figures, taken back out of each
    group's medians into ``results``."""

    PREFIX = "llama.cpp "

    def __init__(self, llama, checkpoint: Path, workdir: Path):
        start = time.perf_counter()
        self.llama, self.checkpoint, self.workdir = llama, checkpoint, workdir
        self.files = llama.prepare(checkpoint, workdir / "gguf")
        merge = json.loads((checkpoint / "config.json").read_text())["vision_config"]["spatial_merge_size"]
        self.patches_per_token = merge * merge
        self.results: dict = {
            "build_commit": llama.commit(), "threads": llama.threads,
            "gguf_gb": {p.name: p.stat().st_size / 2**30 for group in self.files.values() for p in group.values()},
            "vision_ms": {}, "vision_patches": {},
        }
        print(f"llama.cpp {self.results['build_commit']}: GGUF files ready in {time.perf_counter() - start:.0f} s", flush=True)

    def _take(self, m: dict) -> dict[str, dict]:
        """Remove llama.cpp's entries from ``m``: {format: medians}."""
        return {k.removeprefix(self.PREFIX): m.pop(k) for k in [k for k in m if k.startswith(self.PREFIX)]}

    def _png(self, picture, name: str) -> Path:
        from PIL import Image

        path = self.workdir / name
        Image.fromarray(picture).save(path)
        return path

    # image encode: each projector, beside the smallest text model llama-mtmd-cli must load
    def vision_measures(self, size: str) -> dict:
        from benchmarks.llama_cpp import PROJECTORS, VISION_TEXT_FORMAT
        from genai_qwen3vl.testing.media import make_picture

        image = self._png(make_picture(*VISION_SIZES[size], 1), f"vision-{size}.png")  # the picture measure_vision encodes
        text = self.files["text"][VISION_TEXT_FORMAT]
        return {self.PREFIX + p: partial(self.llama.image_prompt, text, self.files["mmproj"][p], image, TTFT_TEXT) for p in PROJECTORS}

    def take_vision(self, size: str, m: dict) -> None:
        got = self._take(m)
        self.results["vision_ms"][size] = {p: r["encode_ms"] for p, r in got.items()}
        self.results["vision_patches"][size] = int(next(iter(got.values()))["image_tokens"]) * self.patches_per_token
        print(f"llama.cpp vision {size} ({self.results['vision_patches'][size]} patches): "
              + ", ".join(f"projector {p} {r['encode_ms']:.0f} ms" for p, r in got.items()), flush=True)

    # time to first token: the image prompt of measure_og("ttft"), every text format, the f32 projector
    def ttft_measures(self) -> dict:
        from benchmarks.llama_cpp import TEXT_FORMATS
        from genai_qwen3vl.testing.media import make_picture

        image = self._png(make_picture(*TTFT_IMAGE, 2), "ttft.png")
        return {self.PREFIX + f: partial(self.llama.image_prompt, self.files["text"][f], self.files["mmproj"]["f32"], image, TTFT_TEXT)
                for f in TEXT_FORMATS}

    def take_ttft(self, m: dict) -> None:
        got = self._take(m)
        self.results["ttft_ms"] = {f: r["ttft_ms"] for f, r in got.items()}
        self.results["ttft_prompt_tokens"] = int(got["f32"]["prompt_tokens"])
        print(f"llama.cpp TTFT ({self.results['ttft_prompt_tokens']} tokens): "
              + ", ".join(f"{f} {v:.0f} ms" for f, v in self.results["ttft_ms"].items()), flush=True)

    def decode_measures(self) -> dict:
        from benchmarks.llama_cpp import TEXT_FORMATS

        return {self.PREFIX + f: partial(self.llama.decode, self.files["text"][f], DECODE_PROMPT_TOKENS, DECODE_STEPS)
                for f in TEXT_FORMATS}

    def take_decode(self, m: dict) -> None:
        got = self._take(m)
        self.results["decode_tokens_per_s"] = {f: r["tokens_per_s"] for f, r in got.items()}
        self.results["peak_decode_gb"] = {f: r["peak_gb"] for f, r in got.items()}
        print("llama.cpp decode tok/s: " + ", ".join(f"{f} {r['tokens_per_s']:.2f} ({r['peak_gb']:.2f} GB)" for f, r in got.items()),
              flush=True)

    def prefill_measures(self) -> dict:
        from benchmarks.llama_cpp import TEXT_FORMATS

        return {self.PREFIX + f: partial(self.llama.prefill, self.files["text"][f], LLAMA_PREFILL_TOKENS) for f in TEXT_FORMATS}

    def take_prefill(self, m: dict) -> None:
        got = self._take(m)
        self.results["prefill_tokens_per_s"] = {f: r["tokens_per_s"] for f, r in got.items()}
        self.results["prefill_prompt_tokens"] = LLAMA_PREFILL_TOKENS
        print(f"llama.cpp prefill ({LLAMA_PREFILL_TOKENS} tokens) tok/s: "
              + ", ".join(f"{f} {v:.1f}" for f, v in self.results["prefill_tokens_per_s"].items()), flush=True)

    def weight_error(self) -> None:
        """Each GGUF text model against the checkpoint (the f32 one must come out 0: the name
        mapping and layouts are right), in a fresh process each."""
        errors, types = {}, {}
        for f, path in self.files["text"].items():
            r = child("weight_error", "gguf", str(path), str(self.checkpoint), str(self.llama.root))
            errors[f], types[f] = r["error"], r["types"]
            print(f"weight error llama.cpp {f}: " + ", ".join(f"{k} {v:.4f}" for k, v in r["error"].items()), flush=True)
        if errors["f32"]["all"] or errors["f32"]["embedding"]:
            raise SystemExit(f"the f32 GGUF differs from the checkpoint ({errors['f32']}): the GGUF name mapping is wrong")
        self.results["weight_error"], self.results["tensor_types"] = errors, types


# og's figure over llama.cpp's: og int4 against Q4_K_M and Q4_0, og fp32 against f32
LLAMA_PAIRS = {"og_int4/q4_k_m": ("og_int4", "q4_k_m"), "og_int4/q4_0": ("og_int4", "q4_0"), "og_fp32/f32": ("og_fp32", "f32")}


def ratios_vs_llama_cpp(results: dict) -> dict:
    """og / llama.cpp for each pair of LLAMA_PAIRS: above 1, og decodes or prefills faster, or
    takes more memory or time; vision: vision.onnx's encode time over each projector's."""
    ll = results["llama_cpp"]
    ours = {"decode": results["decode_tokens_per_s"], "prefill": results["prefill_tokens_per_s"],
            "peak_decode_gb": results["peak_decode_gb"],
            "ttft": {"og_fp32": results["ttft_ms"]["og"], "og_int4": results["ttft_ms"]["og_int4"]}}
    theirs = {"decode": ll["decode_tokens_per_s"], "prefill": ll["prefill_tokens_per_s"], "peak_decode_gb": ll["peak_decode_gb"],
              "ttft": ll["ttft_ms"]}
    ratios = {measure: {pair: ours[measure][o] / theirs[measure][f] for pair, (o, f) in LLAMA_PAIRS.items()} for measure in ours}
    ratios["vision"] = {f"{size} onnx/{p}": results["vision_by_size"][size]["onnx_ms"] / ms
                        for size, by_projector in ll["vision_ms"].items() for p, ms in by_projector.items()}
    return ratios


def run_vision_quant(layers: int, vision_layers: int, bits: str, repeats: int, workdir: Path) -> dict:
    """og int4 with the fp32 vision tower against og int4 with ``--vision_quant bits``, the
    engines alternating round by round: image encode at both sizes, time to first token, decode
    tokens/s and peak RSS decoding; then the features' error against fp32 and what it does to
    the next-token distributions of the image prompt (KL, top-1 agreement)."""
    from benchmarks.export_memory import measure as measure_export
    from benchmarks.models import cached_checkpoint, qwen3vl_2b_shape

    ckpt = cached_checkpoint(qwen3vl_2b_shape(layers, vision_layers))
    results: dict = {"config": {"layers": layers, "vision_layers": vision_layers, "threads": os.cpu_count(), "vision_quant": bits},
                     "export": {}}
    dirs = {"fp32": workdir / "int4", bits: workdir / f"int4-vision-{bits}"}
    for name, folder in dirs.items():
        extra = () if name == "fp32" else ("--vision_quant", bits)
        results["export"][name] = measure_export(ckpt, "int4", keep=folder, extra=extra)
        print(f"export int4, vision {name}: {results['export'][name]['seconds']} s", flush=True)
    results["vision_ms"], results["vision_peak_gb"] = {}, {}
    for size in VISION_SIZES:
        m = interleaved({name: partial(child, "vision", "onnx", str(d), str(ckpt), size, 1) for name, d in dirs.items()}, repeats)
        results["vision_ms"][size] = {name: r["ms"] for name, r in m.items()}
        results["vision_peak_gb"][size] = {name: r["peak_gb"] for name, r in m.items()}
        print(f"vision {size}: " + ", ".join(f"{n} {r['ms']:.0f} ms / {r['peak_gb']:.2f} GB" for n, r in m.items()), flush=True)
    m = interleaved({name: partial(child, "og", "ttft", str(d), 1) for name, d in dirs.items()}, repeats)
    results["ttft_ms"] = {name: r["ms"] for name, r in m.items()}
    m = interleaved({name: partial(child, "og", "decode", str(d), 1) for name, d in dirs.items()}, repeats)
    results["decode_tokens_per_s"] = {name: r["tokens_per_s"] for name, r in m.items()}
    results["peak_decode_gb"] = {name: r["peak_gb"] for name, r in m.items()}
    print(f"TTFT ms {results['ttft_ms']}, decode tok/s {results['decode_tokens_per_s']}, peak GB {results['peak_decode_gb']}", flush=True)
    sets = 1 + len(json.loads((ckpt / "config.json").read_text())["vision_config"]["deepstack_visual_indexes"])
    results["feature_error"] = {}
    for size in VISION_SIZES:
        files = {name: workdir / f"features-{name}-{size}.npy" for name in dirs}
        for name, d in dirs.items():
            child("features", str(d), size, str(files[name]))
        results["feature_error"][size] = feature_error(files["fp32"], files[bits], sets)
    results["next_token"] = int4_cost(dirs["fp32"], dirs[bits], workdir, image=True)
    print(f"features {results['feature_error']}, next token {results['next_token']}", flush=True)
    return results


def vision_quant_markdown(results: dict) -> str:
    c, bits = results["config"], results["config"]["vision_quant"]
    lines = [
        f"og int4 with the fp32 vision tower against `--vision_quant {bits}`: Qwen3-VL-2B's widths, {c['layers']} text layers, "
        f"{c['vision_layers']} vision blocks, {c['threads']} threads, the two alternating round by round (medians).",
        "",
        f"| measure | vision fp32 | vision {bits} | ratio |",
        "|---|---|---|---|",
    ]

    def row(label, pair, fmt, unit=""):
        a, b = pair["fp32"], pair[bits]
        lines.append(f"| {label} | {fmt.format(a)}{unit} | {fmt.format(b)}{unit} | {b / a:.2f}x |")

    for size in VISION_SIZES:
        row(f"image encode {size}", results["vision_ms"][size], "{:.0f}", " ms")
        row(f"peak RSS encoding {size}", results["vision_peak_gb"][size], "{:.2f}", " GB")
    row("time to first token (image prompt)", results["ttft_ms"], "{:.0f}", " ms")
    row("decode tokens/s", results["decode_tokens_per_s"], "{:.2f}")
    row("peak RSS decoding", results["peak_decode_gb"], "{:.2f}", " GB")
    lines.append("")
    for size, e in results["feature_error"].items():
        lines.append(f"* features at {size} against fp32: relative RMS " + ", ".join(f"{x:.4f}" for x in e["relative_rms"])
                     + f" (merger, then each DeepStack merger); cosine {e['cosine']:.6f}")
    k = results["next_token"]
    lines.append(f"* next-token distributions of the image prompt, fed the fp32-vision export's greedy tokens for {k['steps']} steps: "
                 f"KL(fp32 vision || {bits} vision) mean {k['kl_mean']:.3g}, max {k['kl_max']:.3g}; top-1 agreement "
                 f"{k['top1_agreement']:.0%}")
    return "\n".join(lines) + "\n"


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


WEIGHT_CLASSES = ("q", "k", "v", "o", "gate", "up", "down", "layers", "lm_head", "embedding", "all")


def _types_line(types: dict[str, dict[str, str]]) -> str:
    """llama.cpp's tensor types per format, classes grouped by type."""
    parts = []
    for fmt, by_class in types.items():
        groups: dict[str, list[str]] = {}
        for cls, t in by_class.items():
            groups.setdefault(t, []).append(cls)
        parts.append(f"{fmt.upper()}: " + ", ".join(f"{t} for {' '.join(c)}" for t, c in groups.items()))
    return "llama.cpp's tensor types: " + "; ".join(parts) + "."


def weight_error_markdown(results: dict) -> list[str]:
    if "weight_error" not in results:
        return []
    ll = results.get("llama_cpp", {})
    rows = {"og int4": results["weight_error"]["og_int4"]} | {f"llama.cpp {f.upper()}": e for f, e in ll.get("weight_error", {}).items()}
    lines = [
        "",
        "Weight error: relative RMS ||W_deq - W|| / ||W|| of the dequantized text weights against the checkpoint's, over each "
        "tensor class; layers: q to down together; all: every class but the embedding table (the matrices each decoded token "
        "is multiplied by); "
        "–: kept in full precision.",
        "",
        "| weights | " + " | ".join(WEIGHT_CLASSES) + " |",
        "|---" * (len(WEIGHT_CLASSES) + 1) + "|",
    ]
    for name, e in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{e[c]:.4f}" if c in e else "–" for c in WEIGHT_CLASSES) + " |")
    if "tensor_types" in ll:
        lines += ["", _types_line(ll["tensor_types"]) + " The tied GGUF has no output.weight: its LM head is token_embd."]
    return lines


def llama_markdown(results: dict) -> list[str]:
    ll, q = results["llama_cpp"], results["ratios_vs_llama_cpp"]
    d, pf, pk, t = results["decode_tokens_per_s"], results["prefill_tokens_per_s"], results["peak_decode_gb"], results["ttft_ms"]
    rows = {
        "og fp32": (d["og_fp32"], pf["og_fp32"], pk["og_fp32"], t["og"], None),
        "og int4": (d["og_int4"], pf["og_int4"], pk["og_int4"], t["og_int4"], results["weight_error"]["og_int4"]),
    }
    for f in ll["decode_tokens_per_s"]:
        rows[f"llama.cpp {f.upper()}"] = (ll["decode_tokens_per_s"][f], ll["prefill_tokens_per_s"][f], ll["peak_decode_gb"][f],
                                          ll["ttft_ms"][f], ll["weight_error"][f])
    order = ["og fp32", "llama.cpp F32", "og int4"] + [k for k in rows if k not in ("og fp32", "llama.cpp F32", "og int4")]
    lines = [
        "",
        f"## llama.cpp on the same checkpoint (build {ll['build_commit']}, {ll['threads']} threads, engines alternating round by round)",
        "",
        f"| engine, format | decode tok/s | prefill tok/s ({results['prefill_prompt_tokens']} / {ll['prefill_prompt_tokens']} tokens) "
        f"| peak RSS decoding | time to first token ({t['prompt_tokens']} / {ll['ttft_prompt_tokens']}-token image prompt) "
        "| weight error (layers / all) |",
        "|---|---|---|---|---|---|",
    ]
    for name in order:
        dec, pre, peak, ttft, err = rows[name]
        error = "–" if err is None else " / ".join(f"{err[k]:.4f}" if k in err else "–" for k in ("layers", "all"))
        lines.append(f"| {name} | {dec:.2f} | {pre:.1f} | {peak:.2f} GB | {ttft:.0f} ms | {error} |")
    lines += ["", "og / llama.cpp (tokens/s above 1: og is faster; memory and time above 1: og needs more):", ""]
    for pair, (ours, theirs) in LLAMA_PAIRS.items():
        lines.append(f"* {ours.replace('_', ' ')} / llama.cpp {theirs.upper()}: decode {q['decode'][pair]:.2f}x, "
                     f"prefill {q['prefill'][pair]:.2f}x, "
                     f"peak RSS {q['peak_decode_gb'][pair]:.2f}x, time to first token {q['ttft'][pair]:.2f}x")
    projectors = list(next(iter(ll["vision_ms"].values())))
    lines += ["", "| image encode | og vision.onnx | " + " | ".join(f"llama.cpp projector {p.upper()}" for p in projectors) + " |",
              "|---" * (len(projectors) + 2) + "|"]
    for size, by_projector in ll["vision_ms"].items():
        ours = results["vision_by_size"][size]
        cells = " | ".join(f"{ms:.0f} ms ({ours['onnx_ms'] / ms:.2f}x)" for ms in by_projector.values())
        lines.append(f"| {size} ({ours['patches']} / {ll['vision_patches'][size]} patches) | {ours['onnx_ms']:.0f} ms | {cells} |")
    lines += [
        "",
        "How llama.cpp is measured: decode, `llama-bench -d 128 -n 32` (32 tokens after a 128-token context, as og's decode); "
        f"prefill, `llama-bench -p {ll['prefill_prompt_tokens']} -n 0`, against og's time to the first token of a text prompt of "
        "about as many tokens; image encode, llama-mtmd-cli's \"mtmd batch encoding done in N ms\" (the Q4_0 text model beside "
        "the projector); time to first token, llama-mtmd-cli `-n 1`'s \"prompt eval time\", which runs from the first prompt "
        "chunk through the image encode and the image's and text's decode to the last prompt position's logits (it leaves out "
        "reading and resizing the PNG), with the f32 projector, against og's full time to the first token of the same image and "
        "text. llama.cpp resizes images to its own grid (the patch counts above: og / llama.cpp). Peak RSS: each process's own "
        "VmHWM (llama.cpp's GGUF pages count once touched through mmap). Ratios in the image table: og's time over llama.cpp's.",
    ]
    return lines


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
    lines += weight_error_markdown(results)
    if "llama_cpp" in results:
        lines += llama_markdown(results)
    return "\n".join(lines) + "\n"


def chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ll = results.get("llama_cpp")
    if ll:  # room for llama.cpp's bars
        fig, axes = plt.subplots(1, 3, figsize=(18, 4.2), gridspec_kw={"width_ratios": [7, 5, 4]})
    else:
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    d = results["decode_tokens_per_s"]
    names, values, colors = ["transformers\nfp32", "og fp32", "og int4"], [d["hf_fp32"], d["og_fp32"], d["og_int4"]], \
        ["grey", "tab:blue", "tab:green"]
    if ll:
        names += [f"llama.cpp\n{f.upper()}" for f in ll["decode_tokens_per_s"]]
        values += list(ll["decode_tokens_per_s"].values())
        colors += ["tab:orange"] * len(ll["decode_tokens_per_s"])
    axes[0].bar(names, values, color=colors)
    axes[0].set_title("decode (tokens/s, higher is better)")
    t = results["ttft_ms"]
    names, values, colors = ["transformers", "og"], [t["hf"] / 1000, t["og"] / 1000], ["grey", "tab:blue"]
    if ll:
        names[1:] = ["og fp32", "og int4"] + [f"llama.cpp\n{f.upper()}" for f in ("f32", "q4_k_m")]
        values += [t["og_int4"] / 1000] + [ll["ttft_ms"][f] / 1000 for f in ("f32", "q4_k_m")]
        colors += ["tab:green"] + ["tab:orange"] * 2
    axes[1].bar(names, values, color=colors)
    axes[1].set_title(f"time to first token, {t['prompt_tokens']} tokens (s)")
    v = results["vision_by_size"]
    sizes = list(v)
    bars = {"transformers": ([v[s]["torch_ms"] for s in sizes], "grey"), "onnxruntime": ([v[s]["onnx_ms"] for s in sizes], "tab:blue")}
    if ll:
        bars["llama.cpp (f32 projector)"] = ([ll["vision_ms"][s]["f32"] for s in sizes], "tab:orange")
    width = 0.8 / len(bars)
    for j, (label, (ms, color)) in enumerate(bars.items()):
        axes[2].bar([i + (j - (len(bars) - 1) / 2) * width for i in range(len(sizes))], [x / 1000 for x in ms], width,
                    label=label, color=color)
    axes[2].set_xticks(range(len(sizes)), sizes)
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
            results = run(layers, vision_layers, args.repeats or (3 if args.quick else 5), Path(work), llama)
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
        else:
            (docs / "benchmarks.md").write_text("# Benchmarks\n\n" + text)
            chart(results, docs / "benchmarks.png")


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--_child":
        name, args = sys.argv[2], json.loads(sys.argv[3]) if len(sys.argv) > 3 else []
        print(json.dumps(MEASURES[name](*args)))
    else:
        main()
