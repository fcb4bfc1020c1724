"""The text decoder, ``model.onnx``: og's builder (through our builder class), then the graph
changes: DeepStack (``deepstack.py``) and, by default, trimmed prefill logits (``trim_logits.py``).

int4 on CPU: og's builder writes the fp32 decoder (it streams the weights to disk) and
``quantize.quantize_weights`` turns it into og's int4 graph one weight at a time, instead of og's
own quantization pass, which holds the whole fp32 model in memory. A mixture-of-experts
decoder's experts come out of og's builder already as 4-bit QMoE (``moe.py``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx

from ..errors import Qwen3VLExportError
from ..model.spec import Qwen3VLSpec
from .deepstack import add_deepstack
from .og_builder import og_builder_options, run_og_builder, text_only_view
from .options import ExportOptions
from .trim_logits import trim_prefill_logits


def build_decoder(checkpoint_dir: Path, spec: Qwen3VLSpec, work_dir: Path, out_dir: Path, options: ExportOptions) -> Path:
    """Write ``model.onnx`` (+ ``.data``) into ``out_dir``; ``work_dir`` holds og's intermediate files."""
    target = options.target
    linear = spec.architecture.linear_attention
    view = text_only_view(checkpoint_dir, work_dir, spec.text.mrope_section if linear else None, float32=linear)
    og_precision = "fp32" if target.streaming_int4 else options.precision
    og_extra = og_builder_options(options, experts=spec.text.experts is not None)
    og_dir = run_og_builder(view, work_dir, og_precision, options.execution_provider, og_extra, spec.architecture)
    src = og_dir / "model.onnx"
    if not src.is_file():
        raise Qwen3VLExportError(f"onnxruntime-genai's builder wrote no {src.name} into {og_dir}")
    if target.streaming_int4:
        from .quantize import quantize_weights

        quantized = Path(work_dir) / "int4" / "model.onnx"
        quantize_weights(src, quantized, options.quant_layout)
        shutil.rmtree(og_dir)
        src, og_dir = quantized, quantized.parent
    model = onnx.load(str(src), load_external_data=False)
    add_deepstack(model, spec)
    if options.trim_prefill_logits:
        trim_prefill_logits(model)
    dst = Path(out_dir) / "model.onnx"
    onnx.save(model, str(dst))
    data = og_dir / "model.onnx.data"
    if data.is_file():
        shutil.move(str(data), str(Path(out_dir) / data.name))
    return dst
