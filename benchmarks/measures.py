"""What the benchmark measures, each in a process of its own: timings, peak memory, logits,
vision features and weight error, on one exported folder or checkpoint at a time.

``child`` (benchmarks/orchestration.py) runs ``python benchmarks/measures.py --_child NAME ARGS``:
one entry of ``MEASURES``, its JSON on the last line of stdout. A process measures one engine, so
that its peak resident memory (VmHWM, which a new program starts afresh, unlike ru_maxrss, which
survives exec and would report the parent's peak) is that engine's own.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import sys
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


def rss_gb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    return 0.0


def peak_gb() -> float:
    """This process's own peak resident memory (VmHWM; reset by exec, unlike ru_maxrss)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def median_time(fn, repeats: int, warmup: int = 1) -> float:
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

        from genai_qwen3vl.model.folder import ExportedFolder

        vision = ExportedFolder.open(model_dir).vision
        options = ort.SessionOptions()
        options.enable_mem_pattern = vision.session_options.get("enable_mem_pattern", True)
        session = ort.InferenceSession(str(Path(model_dir) / vision.filename), options, providers=["CPUExecutionProvider"])
        loaded = rss_gb()
        run = lambda: session.run(None, {"pixel_values": pixels, "image_grid_thw": grid})  # noqa: E731
    else:
        import torch

        from genai_qwen3vl.model.spec import Qwen3VLSpec

        torch.set_num_threads(os.cpu_count() or 1)
        from genai_qwen3vl.export.vision import build_vision_model

        # transformers' vision tower with its weights only, run with sdpa attention
        visual = build_vision_model(checkpoint, Qwen3VLSpec.from_checkpoint(checkpoint)).visual
        visual.config._attn_implementation = "sdpa"
        loaded = rss_gb()
        pv, g = torch.from_numpy(pixels), torch.from_numpy(grid)

        def run():
            with torch.no_grad():
                visual(pv, grid_thw=g)

    seconds = median_time(run, repeats)
    return {"ms": seconds * 1000, "peak_gb": peak_gb(), "loaded_gb": loaded, "patches": int(np.prod(grid))}


def chat_prompt(model_dir: Path, with_image: bool, text: str) -> str:
    from genai_qwen3vl.runtime.processor import Qwen3VLProcessor

    content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": text}]
    return Qwen3VLProcessor(model_dir).apply_chat_template([{"role": "user", "content": content}])


def long_text(model_dir: Path, tokens: int) -> str:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    words = "the quick brown fox jumps over the lazy dog while the cat watches".split()
    text, i = "", 0
    while len(tok.encode(chat_prompt(model_dir, False, text)).ids) < tokens:
        text += words[i % len(words)] + " "
        i += 1
    return text


def _og_stream(model_dir: Path, prompt: str, images, max_new: int):
    import onnxruntime_genai as og

    from genai_qwen3vl.runtime.processor import Qwen3VLProcessor

    model = og.Model(str(model_dir))
    processor = Qwen3VLProcessor(model_dir)
    return partial(og_greedy_stream, model, processor, prompt, images, max_new)


def og_greedy_stream(model, processor, prompt: str, images, max_new: int):
    """A greedy TokenStream over ``prompt`` (og.Generator with its inputs set), which makes exactly
    ``max_new`` tokens; returns it and the prompt's length."""
    from genai_qwen3vl.runtime.generate import TokenStream

    inputs = processor(prompt, images=images)
    n = int(inputs["input_ids"].shape()[-1])
    return TokenStream(model, inputs, {"do_sample": False, "max_length": n + max_new, "min_length": n + max_new}), n


def measure_og(kind: str, model_dir: str, repeats: int, prompt_tokens: int = PREFILL_PROMPT_TOKENS) -> dict:
    """ "ttft": an image prompt, "prefill": a text prompt of about ``prompt_tokens`` tokens (time
    to the first token); "decode": tokens/s after a DECODE_PROMPT_TOKENS-token prompt."""
    from genai_qwen3vl.testing.media import make_picture

    model_dir = Path(model_dir)
    if kind in ("ttft", "prefill"):  # time to the first token: an image prompt, or a long text one
        if kind == "ttft":
            prompt, images = chat_prompt(model_dir, True, TTFT_TEXT), [make_picture(*TTFT_IMAGE, 2)]
        else:
            prompt, images = chat_prompt(model_dir, False, long_text(model_dir, prompt_tokens)), []
        start = _og_stream(model_dir, prompt, images, 1)
        state = {}

        def first():
            stream, state["n"] = start()
            next(stream)

        seconds = median_time(first, repeats)
        return {"ms": seconds * 1000, "prompt_tokens": state["n"], "peak_gb": peak_gb()}
    prompt = chat_prompt(model_dir, False, long_text(model_dir, DECODE_PROMPT_TOKENS))
    start = _og_stream(model_dir, prompt, [], DECODE_STEPS + 1)
    rates = []
    for _ in range(repeats + 1):
        stream, n = start()
        for _ in stream:  # the first token, then DECODE_STEPS timed from it to the last
            pass
        rates.append(DECODE_STEPS / stream.decode_s)
    return {"tokens_per_s": statistics.median(rates[1:]), "prompt_tokens": n, "peak_gb": peak_gb()}


def measure_hf(kind: str, model_dir: str, checkpoint: str, repeats: int) -> dict:
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoProcessor

    from genai_qwen3vl.model.spec import Qwen3VLSpec
    from genai_qwen3vl.testing.media import make_picture

    torch.set_num_threads(os.cpu_count() or 1)
    model_dir = Path(model_dir)
    arch = Qwen3VLSpec.from_checkpoint(checkpoint).architecture  # Qwen3VL or Qwen3VLMoe ForConditionalGeneration
    model = arch.transformers_class(arch.hf_class).from_pretrained(checkpoint, dtype=torch.float32).eval()  # its default attention (sdpa)
    processor = AutoProcessor.from_pretrained(checkpoint)
    processor.image_processor = AutoImageProcessor.from_pretrained(checkpoint, backend="pil")
    if kind in ("ttft", "prefill"):  # as measure_og: an image prompt, or a long text one
        if kind == "ttft":
            prompt = chat_prompt(model_dir, True, TTFT_TEXT)
            enc = processor(text=[prompt], images=[Image.fromarray(make_picture(*TTFT_IMAGE, 2))], return_tensors="pt")
        else:
            enc = processor(text=[chat_prompt(model_dir, False, long_text(model_dir, PREFILL_PROMPT_TOKENS))], return_tensors="pt")

        def first():
            with torch.no_grad():
                model.generate(**enc, max_new_tokens=1, do_sample=False)

        seconds = median_time(first, repeats)
        return {"ms": seconds * 1000, "prompt_tokens": int(enc["input_ids"].shape[1]), "peak_gb": peak_gb()}
    prompt = chat_prompt(model_dir, False, long_text(model_dir, DECODE_PROMPT_TOKENS))
    enc = processor(text=[prompt], return_tensors="pt")

    def gen(steps):
        with torch.no_grad():
            model.generate(**enc, max_new_tokens=steps, min_new_tokens=steps, do_sample=False)

    rates = []
    for _ in range(repeats + 1):
        t1 = median_time(lambda: gen(1), 1, warmup=0)
        tn = median_time(lambda: gen(DECODE_STEPS + 1), 1, warmup=0)
        rates.append(DECODE_STEPS / (tn - t1))
    return {"tokens_per_s": statistics.median(rates[1:]), "prompt_tokens": int(enc["input_ids"].shape[1]), "peak_gb": peak_gb()}


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
    compared on the same contexts. Saved to ``out_file``. The forced run is a loop of its own:
    og's ``append_tokens`` feeds it the given tokens, where a TokenStream takes og's next token.
    """
    import numpy as np
    import onnxruntime_genai as og

    from genai_qwen3vl.runtime.generate import TokenStream, new_generator
    from genai_qwen3vl.runtime.processor import Qwen3VLProcessor
    from genai_qwen3vl.testing.media import make_picture

    model_dir = Path(model_dir)
    if image:
        prompt, images = chat_prompt(model_dir, True, TTFT_TEXT), [make_picture(*TTFT_IMAGE, 2)]
    else:
        prompt, images = chat_prompt(model_dir, False, long_text(model_dir, DECODE_PROMPT_TOKENS)), []
    model = og.Model(str(model_dir))
    inputs = Qwen3VLProcessor(model_dir)(prompt, images=images)
    n = int(inputs["input_ids"].shape()[-1])
    search = {"do_sample": False, "max_length": n + steps + 1, "min_length": n + steps + 1}

    def last(generator):
        return np.array(generator.get_output("logits")[0, -1], dtype=np.float32)

    if forced is None:
        stream = TokenStream(model, inputs, search, lambda: len(stream.tokens) >= steps)
        logits = [last(stream.generator) for _ in stream]
    else:
        generator = new_generator(model, inputs, search)
        generator.generate_next_token()
        logits = [last(generator)]
        for token in forced[: steps - 1]:
            generator.append_tokens(np.asarray([token], dtype=np.int32))
            logits.append(last(generator))
    np.save(out_file, np.stack(logits))
    return {"tokens": [int(np.argmax(x)) for x in logits]}


# --------------------------------------------------------------------------- weight error
from genai_qwen3vl.verify.reference import EMBED_TOKENS  # noqa: E402


def tensor_class(name: str) -> str:
    """q, k, v, o, gate, up, down, lm_head or embedding, from a transformers text weight name;
    a Qwen3.5 linear-attention layer's projections are qkv, z and out (its b and a stay float)."""
    if name == "lm_head.weight":
        return "lm_head"
    if name == EMBED_TOKENS:
        return "embedding"
    found = re.search(r"\.(q|k|v|o|gate|up|down)_proj\.weight$|linear_attn\.(?:in_proj_)?(qkv|z|out)(?:_proj)?\.weight$", name)
    if not found:
        raise ValueError(f"{name}: not a text projection, LM head or embedding")
    return found.group(1) or found.group(2)


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
        r = ref[i : i + rows].astype(np.float64)
        err += float(np.square(w[i : i + rows] - r).sum())
        norm += float(np.square(r).sum())
    return err, norm


def weight_error(weights: Mapping, checkpoint: Path) -> dict[str, float]:
    """Relative RMS error ||W_deq - W|| / ||W|| of dequantized text weights ({transformers name:
    float32 array in transformers' layout}) against the checkpoint's, over each tensor class's
    tensors together; "layers": the decoder layers' projections (q, k, v, o, gate, up, down, and
    Qwen3.5's fused qkv and linear-attention z and out);
    "all": every class but the embedding table (which a decoded token only indexes), i.e. the
    matrices each token is multiplied by, the LM head included."""
    import numpy as np

    get = _checkpoint_tensor(Path(checkpoint))
    sums: dict[str, list[float]] = {}
    for names, w in weights.items():
        # a projection og fuses from several (Qwen3.5's q|k|v): against its parts' rows, stacked
        fused = isinstance(names, tuple)
        name, ref = (names[0], np.concatenate([get(part) for part in names])) if fused else (names, get(names))
        if w.shape != ref.shape:
            raise ValueError(f"{name}: dequantized shape {w.shape}, checkpoint {ref.shape}")
        err, norm = _squares(w, ref)
        cls = "qkv" if fused else tensor_class(name)
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
        from genai_qwen3vl.model.spec import Qwen3VLSpec
        from genai_qwen3vl.verify.reference import quantized_text_weights

        arch = Qwen3VLSpec.from_checkpoint(Path(checkpoint)).architecture
        return {"error": weight_error(quantized_text_weights(Path(path), arch), Path(checkpoint))}
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
    rel = [
        float(np.sqrt(((ours - ref)[:, i * width : (i + 1) * width] ** 2).sum() / (ref[:, i * width : (i + 1) * width] ** 2).sum()))
        for i in range(sets)
    ]
    cosine = float((ours * ref).sum() / np.sqrt((ours**2).sum() * (ref**2).sum()))
    return {"relative_rms": rel, "cosine": cosine}


MEASURES = {
    "vision": measure_vision,
    "features": measure_features,
    "og": measure_og,
    "hf": measure_hf,
    "bandwidth": measure_bandwidth,
    "logits": measure_logits,
    "weight_error": measure_weight_error,
}

if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] != "--_child":
        raise SystemExit(f"usage: {sys.argv[0]} --_child NAME [JSON ARGS] (run by benchmarks/run.py; see python benchmarks/run.py --help)")
    print(json.dumps(MEASURES[sys.argv[2]](*(json.loads(sys.argv[3]) if len(sys.argv) > 3 else []))))
