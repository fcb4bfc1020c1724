"""Which runs the benchmark makes, and in which order: the exports, then every measure of
benchmarks/measures.py in a process of its own (``child``), the engines alternating round by
round where they are compared (``interleaved``), llama.cpp's side (``LlamaSide``), and the
results as one dict (benchmarks/reports.py turns it into tables and a chart).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from benchmarks.measures import (
    DECODE_PROMPT_TOKENS,
    DECODE_STEPS,
    LLAMA_PREFILL_TOKENS,
    TTFT_IMAGE,
    TTFT_TEXT,
    VISION_SIZES,
    feature_error,
    weight_bytes,
)
from benchmarks.reports import extrapolate, ratios_vs_llama_cpp

MEASURES_SCRIPT = Path(__file__).with_name("measures.py")


def child(name: str, *args) -> dict:
    """Run one measurement (an entry of benchmarks.measures.MEASURES) in a fresh process and
    return its JSON."""
    out = subprocess.run([sys.executable, str(MEASURES_SCRIPT), "--_child", name, json.dumps(args)], capture_output=True, text=True)
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


def run(layers: int, vision_layers: int, repeats: int, workdir: Path, llama=None, family: str = "qwen3-vl") -> dict:
    """The benchmark on the 2B shape of ``family`` (benchmarks.models.SHAPES: Qwen3-VL-2B's or
    Qwen3.5-2B's); ``llama`` (a benchmarks.llama_cpp.LlamaCpp) adds llama.cpp.
    Alone, each engine measures ``repeats`` times in one process. Beside llama.cpp, the engines
    alternate round by round, each measuring once per process (after its warm-up), and every
    figure is the median over ``repeats`` rounds."""
    from benchmarks.export_memory import measure as measure_export
    from benchmarks.models import SHAPES, cached_checkpoint, checkpoint_bytes

    ckpt = cached_checkpoint(SHAPES[family](layers, vision_layers))
    print(f"checkpoint: {ckpt.name} ({checkpoint_bytes(ckpt) / 2**30:.2f} GB bf16)", flush=True)
    results: dict = {"config": {"family": family, "layers": layers, "vision_layers": vision_layers, "threads": os.cpu_count()}}
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
        m = interleaved(
            {
                "onnx": partial(child, "vision", "onnx", str(fp32), str(ckpt), size, inner),
                "torch": partial(child, "vision", "torch", str(fp32), str(ckpt), size, inner),
                **(side.vision_measures(size) if side else {}),
            },
            rounds,
        )
        if side:
            side.take_vision(size, m)
        o, t = m["onnx"], m["torch"]
        vision[size] = {
            "onnx_ms": o["ms"],
            "torch_ms": t["ms"],
            "onnx_peak_gb": o["peak_gb"],
            "torch_peak_gb": t["peak_gb"],
            "onnx_loaded_gb": o["loaded_gb"],
            "torch_loaded_gb": t["loaded_gb"],
            "patches": o["patches"],
        }
        print(f"vision {size}: onnx {o['ms']:.0f} ms / {o['peak_gb']:.2f} GB, torch {t['ms']:.0f} ms / {t['peak_gb']:.2f} GB", flush=True)
    results["vision_by_size"] = vision
    results["vision"] = {k: vision["1280x720"][k] for k in ("onnx_ms", "torch_ms", "onnx_peak_gb", "torch_peak_gb")}

    ttft_rounds, ttft_inner = (max(1, repeats // 2), 1) if side else (1, max(1, repeats // 2))
    m = interleaved(
        {
            "og": partial(child, "og", "ttft", str(fp32), ttft_inner),
            "og_int4": partial(child, "og", "ttft", str(int4), ttft_inner),
            "hf": partial(child, "hf", "ttft", str(fp32), str(ckpt), ttft_inner),
            **(side.ttft_measures() if side else {}),
        },
        ttft_rounds,
    )
    if side:
        side.take_ttft(m)
    og_ttft, og_int4_ttft, hf_ttft = m["og"], m["og_int4"], m["hf"]
    results["ttft_ms"] = {
        "og": og_ttft["ms"],
        "og_int4": og_int4_ttft["ms"],
        "hf": hf_ttft["ms"],
        "prompt_tokens": og_ttft["prompt_tokens"],
    }
    print(
        f"TTFT ({og_ttft['prompt_tokens']} tokens): og fp32 {og_ttft['ms']:.0f} ms, og int4 {og_int4_ttft['ms']:.0f} ms, "
        f"hf {hf_ttft['ms']:.0f} ms",
        flush=True,
    )

    runs = interleaved(
        {
            "og_fp32": partial(child, "og", "decode", str(fp32), inner),
            "og_int4": partial(child, "og", "decode", str(int4), inner),
            "hf_fp32": partial(child, "hf", "decode", str(fp32), str(ckpt), inner),
            **(side.decode_measures() if side else {}),
        },
        rounds,
    )
    if side:
        side.take_decode(runs)
    decode = {k: v["tokens_per_s"] for k, v in runs.items()}
    results["decode_tokens_per_s"] = decode
    # each engine's own peak (VmHWM of its process) while decoding
    results["peak_decode_gb"] = {k: v["peak_gb"] for k, v in runs.items()}
    print("decode tok/s: " + ", ".join(f"{k} {v:.2f}" for k, v in decode.items()), flush=True)

    if side:  # og's prefill beside llama.cpp's: a text prompt of about LLAMA_PREFILL_TOKENS tokens, to the first token
        m = interleaved(
            {
                "og_fp32": partial(child, "og", "prefill", str(fp32), 1, LLAMA_PREFILL_TOKENS),
                "og_int4": partial(child, "og", "prefill", str(int4), 1, LLAMA_PREFILL_TOKENS),
                **side.prefill_measures(),
            },
            rounds,
        )
        side.take_prefill(m)
        results["prefill_tokens_per_s"] = {k: v["prompt_tokens"] / v["ms"] * 1000 for k, v in m.items()}
        results["prefill_prompt_tokens"] = m["og_fp32"]["prompt_tokens"]
        print(
            f"prefill ({results['prefill_prompt_tokens']} tokens) tok/s: "
            + ", ".join(f"{k} {v:.1f}" for k, v in results["prefill_tokens_per_s"].items()),
            flush=True,
        )

    results["weight_error"] = {"og_int4": child("weight_error", "og", str(int4), str(ckpt))["error"]}
    print("weight error og int4: " + ", ".join(f"{k} {v:.4f}" for k, v in results["weight_error"]["og_int4"].items()), flush=True)
    if side:
        side.weight_error()
        results["llama_cpp"] = side.results
        results["ratios_vs_llama_cpp"] = ratios_vs_llama_cpp(results)

    results["int4_vs_fp32"] = int4_cost(fp32, int4, workdir)
    c = results["int4_vs_fp32"]
    print(
        f"int4 vs fp32 over {c['steps']} steps: KL mean {c['kl_mean']:.3g} max {c['kl_max']:.3g}, "
        f"top-1 agreement {c['top1_agreement']:.0%}",
        flush=True,
    )

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
            "build_commit": llama.commit(),
            "threads": llama.threads,
            "gguf_gb": {p.name: p.stat().st_size / 2**30 for group in self.files.values() for p in group.values()},
            "vision_ms": {},
            "vision_patches": {},
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
        print(
            f"llama.cpp vision {size} ({self.results['vision_patches'][size]} patches): "
            + ", ".join(f"projector {p} {r['encode_ms']:.0f} ms" for p, r in got.items()),
            flush=True,
        )

    # time to first token: the image prompt of measure_og("ttft"), every text format, the f32 projector
    def ttft_measures(self) -> dict:
        from benchmarks.llama_cpp import TEXT_FORMATS
        from genai_qwen3vl.testing.media import make_picture

        image = self._png(make_picture(*TTFT_IMAGE, 2), "ttft.png")
        return {
            self.PREFIX + f: partial(self.llama.image_prompt, self.files["text"][f], self.files["mmproj"]["f32"], image, TTFT_TEXT)
            for f in TEXT_FORMATS
        }

    def take_ttft(self, m: dict) -> None:
        got = self._take(m)
        self.results["ttft_ms"] = {f: r["ttft_ms"] for f, r in got.items()}
        self.results["ttft_prompt_tokens"] = int(got["f32"]["prompt_tokens"])
        print(
            f"llama.cpp TTFT ({self.results['ttft_prompt_tokens']} tokens): "
            + ", ".join(f"{f} {v:.0f} ms" for f, v in self.results["ttft_ms"].items()),
            flush=True,
        )

    def decode_measures(self) -> dict:
        from benchmarks.llama_cpp import TEXT_FORMATS

        return {
            self.PREFIX + f: partial(self.llama.decode, self.files["text"][f], DECODE_PROMPT_TOKENS, DECODE_STEPS) for f in TEXT_FORMATS
        }

    def take_decode(self, m: dict) -> None:
        got = self._take(m)
        self.results["decode_tokens_per_s"] = {f: r["tokens_per_s"] for f, r in got.items()}
        self.results["peak_decode_gb"] = {f: r["peak_gb"] for f, r in got.items()}
        print(
            "llama.cpp decode tok/s: " + ", ".join(f"{f} {r['tokens_per_s']:.2f} ({r['peak_gb']:.2f} GB)" for f, r in got.items()),
            flush=True,
        )

    def prefill_measures(self) -> dict:
        from benchmarks.llama_cpp import TEXT_FORMATS

        return {self.PREFIX + f: partial(self.llama.prefill, self.files["text"][f], LLAMA_PREFILL_TOKENS) for f in TEXT_FORMATS}

    def take_prefill(self, m: dict) -> None:
        got = self._take(m)
        self.results["prefill_tokens_per_s"] = {f: r["tokens_per_s"] for f, r in got.items()}
        self.results["prefill_prompt_tokens"] = LLAMA_PREFILL_TOKENS
        print(
            f"llama.cpp prefill ({LLAMA_PREFILL_TOKENS} tokens) tok/s: "
            + ", ".join(f"{f} {v:.1f}" for f, v in self.results["prefill_tokens_per_s"].items()),
            flush=True,
        )

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


def run_vision_quant(layers: int, vision_layers: int, bits: str, repeats: int, workdir: Path) -> dict:
    """og int4 with the fp32 vision tower against og int4 with ``--vision_quant bits``, the
    engines alternating round by round: image encode at both sizes, time to first token, decode
    tokens/s and peak RSS decoding; then the features' error against fp32 and what it does to
    the next-token distributions of the image prompt (KL, top-1 agreement)."""
    from benchmarks.export_memory import measure as measure_export
    from benchmarks.models import cached_checkpoint, qwen3vl_2b_shape

    ckpt = cached_checkpoint(qwen3vl_2b_shape(layers, vision_layers))
    results: dict = {
        "config": {"layers": layers, "vision_layers": vision_layers, "threads": os.cpu_count(), "vision_quant": bits},
        "export": {},
    }
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
            print(
                f"  export {precision}: {e['seconds']} s, peak RSS {e['peak_rss_gb']} GB "
                f"(decoder stage {e['stage_peak_rss_gb'].get('decoder')} GB), output {e['output_gb']} GB",
                flush=True,
            )
        fp32, int4 = workdir / "fp32", workdir / "int4"
        og_int4 = child("og", "decode", str(int4), repeats)
        og_fp32 = child("og", "decode", str(fp32), repeats)
        hf = child("hf", "decode", str(fp32), str(ckpt), repeats)
        # the int4 export with every MatMulNBits and QMoE at accuracy_level 1 (fp32 activations)
        from genai_qwen3vl.verify.validate import folder_variant, with_accuracy_level

        exact = folder_variant(
            int4, workdir, replace={"model.onnx": with_accuracy_level(int4 / "model.onnx", 1, Path(tempfile.mkdtemp(dir=workdir)))}
        )
        og_int4_l1 = child("og", "decode", str(exact), repeats)
        r["decode_tokens_per_s"] = {
            "og_fp32": og_fp32["tokens_per_s"],
            "og_int4": og_int4["tokens_per_s"],
            "og_int4_level1": og_int4_l1["tokens_per_s"],
            "hf_fp32": hf["tokens_per_s"],
        }
        r["peak_decode_gb"] = {
            "og_fp32": og_fp32["peak_gb"],
            "og_int4": og_int4["peak_gb"],
            "og_int4_level1": og_int4_l1["peak_gb"],
            "hf_fp32": hf["peak_gb"],
        }
        print("  decode tok/s: " + ", ".join(f"{k} {v:.2f}" for k, v in r["decode_tokens_per_s"].items()), flush=True)
        prefill = {
            "og_int4": child("og", "prefill", str(int4), repeats),
            "og_fp32": child("og", "prefill", str(fp32), repeats),
            "hf_fp32": child("hf", "prefill", str(fp32), str(ckpt), repeats),
        }
        r["prefill_ms"] = {k: v["ms"] for k, v in prefill.items()}
        r["prefill_tokens"] = prefill["og_int4"]["prompt_tokens"]
        print(f"  prefill ({r['prefill_tokens']} tokens) ms: " + ", ".join(f"{k} {v:.0f}" for k, v in r["prefill_ms"].items()), flush=True)
        r["decoder_weight_bytes"] = {"fp32": weight_bytes(fp32 / "model.onnx"), "int4": weight_bytes(int4 / "model.onnx")}
        results["depths"][str(depth)] = r
        for folder in workdir.iterdir():
            shutil.rmtree(folder)
    results["full_depth"] = extrapolate(results["depths"], 48)
    return results
