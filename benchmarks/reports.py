"""What the benchmark's results say: the figures derived from the measurements (og over
llama.cpp, the mixture-of-experts extrapolation to full depth) and the reports: the markdown
tables that ``--docs`` writes to docs/ and prints, and docs/benchmarks.png. Pure functions of the
results dict (which ``--json`` writes as it is).
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.measures import VISION_SIZES

# --------------------------------------------------------------------------- derived figures
# og's figure over llama.cpp's: og int4 against Q4_K_M and Q4_0, og fp32 against f32
LLAMA_PAIRS = {"og_int4/q4_k_m": ("og_int4", "q4_k_m"), "og_int4/q4_0": ("og_int4", "q4_0"), "og_fp32/f32": ("og_fp32", "f32")}


def ratios_vs_llama_cpp(results: dict) -> dict:
    """og / llama.cpp for each pair of LLAMA_PAIRS: above 1, og decodes or prefills faster, or
    takes more memory or time; vision: vision.onnx's encode time over each projector's."""
    ll = results["llama_cpp"]
    ours = {
        "decode": results["decode_tokens_per_s"],
        "prefill": results["prefill_tokens_per_s"],
        "peak_decode_gb": results["peak_decode_gb"],
        "ttft": {"og_fp32": results["ttft_ms"]["og"], "og_int4": results["ttft_ms"]["og_int4"]},
    }
    theirs = {
        "decode": ll["decode_tokens_per_s"],
        "prefill": ll["prefill_tokens_per_s"],
        "peak_decode_gb": ll["peak_decode_gb"],
        "ttft": ll["ttft_ms"],
    }
    ratios = {measure: {pair: ours[measure][o] / theirs[measure][f] for pair, (o, f) in LLAMA_PAIRS.items()} for measure in ours}
    ratios["vision"] = {
        f"{size} onnx/{p}": results["vision_by_size"][size]["onnx_ms"] / ms
        for size, by_projector in ll["vision_ms"].items()
        for p, ms in by_projector.items()
    }
    return ratios


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


# --------------------------------------------------------------------------- tables and the chart
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
        lines.append(
            f"* features at {size} against fp32: relative RMS "
            + ", ".join(f"{x:.4f}" for x in e["relative_rms"])
            + f" (merger, then each DeepStack merger); cosine {e['cosine']:.6f}"
        )
    k = results["next_token"]
    lines.append(
        f"* next-token distributions of the image prompt, fed the fp32-vision export's greedy tokens for {k['steps']} steps: "
        f"KL(fp32 vision || {bits} vision) mean {k['kl_mean']:.3g}, max {k['kl_max']:.3g}; top-1 agreement "
        f"{k['top1_agreement']:.0%}"
    )
    return "\n".join(lines) + "\n"


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


WEIGHT_CLASSES = ("q", "k", "v", "qkv", "z", "o", "out", "gate", "up", "down", "layers", "lm_head", "embedding", "all")


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
        rows[f"llama.cpp {f.upper()}"] = (
            ll["decode_tokens_per_s"][f],
            ll["prefill_tokens_per_s"][f],
            ll["peak_decode_gb"][f],
            ll["ttft_ms"][f],
            ll["weight_error"][f],
        )
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
        lines.append(
            f"* {ours.replace('_', ' ')} / llama.cpp {theirs.upper()}: decode {q['decode'][pair]:.2f}x, "
            f"prefill {q['prefill'][pair]:.2f}x, "
            f"peak RSS {q['peak_decode_gb'][pair]:.2f}x, time to first token {q['ttft'][pair]:.2f}x"
        )
    projectors = list(next(iter(ll["vision_ms"].values())))
    lines += [
        "",
        "| image encode | og vision.onnx | " + " | ".join(f"llama.cpp projector {p.upper()}" for p in projectors) + " |",
        "|---" * (len(projectors) + 2) + "|",
    ]
    for size, by_projector in ll["vision_ms"].items():
        ours = results["vision_by_size"][size]
        cells = " | ".join(f"{ms:.0f} ms ({ours['onnx_ms'] / ms:.2f}x)" for ms in by_projector.values())
        lines.append(f"| {size} ({ours['patches']} / {ll['vision_patches'][size]} patches) | {ours['onnx_ms']:.0f} ms | {cells} |")
    lines += [
        "",
        "How llama.cpp is measured: decode, `llama-bench -d 128 -n 32` (32 tokens after a 128-token context, as og's decode); "
        f"prefill, `llama-bench -p {ll['prefill_prompt_tokens']} -n 0`, against og's time to the first token of a text prompt of "
        'about as many tokens; image encode, llama-mtmd-cli\'s "mtmd batch encoding done in N ms" (the Q4_0 text model beside '
        'the projector); time to first token, llama-mtmd-cli `-n 1`\'s "prompt eval time", which runs from the first prompt '
        "chunk through the image encode and the image's and text's decode to the last prompt position's logits (it leaves out "
        "reading and resizing the PNG), with the f32 projector, against og's full time to the first token of the same image and "
        "text. llama.cpp resizes images to its own grid (the patch counts above: og / llama.cpp). Peak RSS: each process's own "
        "VmHWM (llama.cpp's GGUF pages count once touched through mmap). Ratios in the image table: og's time over llama.cpp's.",
    ]
    return lines


_SHAPE_NAMES = {"qwen3-vl": "Qwen3-VL-2B", "qwen3.5": "Qwen3.5-2B"}


def markdown(results: dict) -> str:
    c, v, t, d, r, q = (results[k] for k in ("config", "vision_by_size", "ttft_ms", "decode_tokens_per_s", "roofline", "ratios"))
    lines = [
        f"Random checkpoint with {_SHAPE_NAMES[c.get('family', 'qwen3-vl')]}'s widths, {c['layers']} text layers, "
        f"{c['vision_layers']} vision blocks; "
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
        lines.append(
            f"| time to first token, int4 export | {t['og_int4']:.0f} ms | (fp32) {t['hf']:.0f} ms | "
            f"{t['og_int4'] / t['hf']:.2f}x the time |"
        )
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
    names, values, colors = (
        ["transformers\nfp32", "og fp32", "og int4"],
        [d["hf_fp32"], d["og_fp32"], d["og_int4"]],
        ["grey", "tab:blue", "tab:green"],
    )
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
        axes[2].bar(
            [i + (j - (len(bars) - 1) / 2) * width for i in range(len(sizes))], [x / 1000 for x in ms], width, label=label, color=color
        )
    axes[2].set_xticks(range(len(sizes)), sizes)
    axes[2].set_title("vision encoder (s)")
    axes[2].legend()
    c = results["config"]
    fig.suptitle(f"Qwen3-VL-2B widths, {c['layers']} text layers, {c['vision_layers']} vision blocks, {c['threads']} CPU threads")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
