"""The adapter to onnxruntime-genai's model builder: the only module that runs it (through
``og_compat``, the one that imports it) and the only place that knows its ``extra_options`` keys.

og's ``create_model`` picks the builder class for a checkpoint by its architecture. For the
export it picks ours: a subclass of og's class for the architecture (``Architecture.
og_builder_class``), installed in og's dispatch only for the duration of the call (what of og's
private surface this touches lives in ``og_compat.py``). Ours changes what og gets wrong for
Qwen-VL decoders:

* where GroupQueryAttention is not available (fp32 on CUDA) og's builder falls back to its
  packed ``Attention`` op, whose Qwen-VL path writes no KV cache: the graph declares
  ``present.*`` outputs nothing produces and onnxruntime refuses to load it. Ours falls back to
  ``MultiHeadAttention`` instead, which keeps the cache (og then runs it without a shared
  past/present buffer, see ``Target.attention_op``);
* og's builder has no Qwen3-VL-MoE: for an architecture with experts ours also writes the
  expert layers (``moe.py``), and og is told the architecture it dispatches on
  (``Architecture.og_dispatch_as``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
from pathlib import Path

from ..errors import Qwen3VLExportError
from ..logs import captured_output
from ..model.architectures import Architecture
from . import og_compat
from .memory import reclaiming_mapped_memory


def og_builder_options(options, experts: bool = False) -> dict[str, str]:
    """Our typed options as og's builder ``extra_options`` for the decoder of a checkpoint (with
    ``experts``: a mixture-of-experts one). For CPU int4 og writes fp32 MatMuls, which our
    streaming quantizer turns into MatMulNBits; the experts it quantizes itself (QMoE)."""
    extra: dict[str, str] = {"hf_remote": "true" if options.trust_remote_code else "false"}
    if options.resolved_accuracy_level is None:
        return extra
    if experts:
        extra["moe_quant_type"] = "int4"
        extra["qmoe_block_size"] = str(options.int4_block_size)
        if options.execution_provider == "cuda":
            # og would ship the experts prepacked for one GPU generation's CUTLASS kernel (and only
            # for widths that tile as it wants); raw blocks are laid out by onnxruntime's QMoE
            # PrePack when the session loads them, for the GPU it runs on
            extra["qmoe_weights_prepacked"] = "0"
    if not options.target.streaming_int4:
        extra["block_size"] = str(options.int4_block_size)
        extra["accuracy_level"] = str(options.resolved_accuracy_level)
    return extra


def text_only_view(checkpoint_dir: Path, work_dir: Path, mrope_section: tuple[int, ...] | None = None, float32: bool = False) -> Path:
    """A view of the checkpoint (links to its files) whose config has no vision blocks, so that
    og's builder, which loads the whole model class, does not also hold the vision tower in
    memory. The text config is untouched, except that ``mrope_section`` (given) is written where
    the config leaves it to transformers' default: og's builder writes no multimodal rotary
    embedding at all without it (Qwen3.5's configs may omit it; transformers then uses [11, 11, 10]).

    ``float32``: og's builder loads the model in float32 rather than the checkpoint's dtype
    (transformers 5 loads "auto"). og computes some weights from others in the dtype it loaded:
    for Qwen3.5 the zero-centred norms' 1+w and the linear layers' -exp(A_log), which in bf16 moved
    a tiny model's logits by 0.3 where transformers computes them in float32."""
    view = Path(work_dir) / "text_only_checkpoint"
    view.mkdir(parents=True, exist_ok=True)
    for item in Path(checkpoint_dir).iterdir():
        if item.name != "config.json" and item.is_file():
            (view / item.name).symlink_to(item.resolve())
    config = json.loads((Path(checkpoint_dir) / "config.json").read_text(encoding="utf-8"))
    config["vision_config"] = {**config.get("vision_config", {}), "depth": 0, "deepstack_visual_indexes": []}
    text = config.get("text_config")
    if float32:
        config["dtype"] = "float32"
        if isinstance(text, dict):
            text["dtype"] = "float32"
            text.pop("torch_dtype", None)
        config.pop("torch_dtype", None)
    if mrope_section is not None and isinstance(text, dict):
        key = "rope_parameters" if isinstance(text.get("rope_parameters"), dict) or "rope_scaling" not in text else "rope_scaling"
        rope = dict(text.get(key) or {})
        rope.setdefault("mrope_section", list(mrope_section))
        text[key] = rope
    (view / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return view


@functools.cache
def builder_class(arch: Architecture) -> type:
    """Our decoder builder class for ``arch``: og's class for it, with the changes above."""
    bases = (og_compat.builder_base(arch),)
    if arch.experts is not None:
        from .moe import moe_builder_mixin

        bases = (moe_builder_mixin(arch), *bases)

    class DecoderBuilder(*bases):
        def is_packed_attn_supported(self) -> bool:
            return False

    kind = "Moe" if arch.experts is not None else ""
    DecoderBuilder.__name__ = DecoderBuilder.__qualname__ = f"GenaiQwen3VL{kind}{arch.og_builder_class}"
    return DecoderBuilder


def run_og_builder(
    checkpoint_dir: Path,
    work_dir: Path,
    precision: str,
    execution_provider: str,
    extra: dict[str, str],
    arch: Architecture | None = None,
) -> Path:
    """Run og's ``create_model`` with ``exclude_embeds`` into ``work_dir/og``; returns that folder.
    With ``arch``, og builds with our builder class for it (where it names one) and the options it
    needs; without, with og's own.

    og's builder prints progress bars and notes on stdout/stderr and logs its quantizer's
    progress; all of it goes to the debug log (``--verbose``).
    """
    og = og_compat.builder_module()
    from transformers.utils import logging as hf_logging

    out = Path(work_dir) / "og"
    cache = Path(work_dir) / "og_cache"
    options = {"exclude_embeds": "true", "filename": "model.onnx", **extra, **dict(arch.og_extra_options if arch else ())}
    kv = [f"{k}={v}" for k, v in options.items()]
    verbosity = hf_logging.get_verbosity()
    # the text-only view leaves the vision weights unused; transformers reports that loudly
    hf_logging.set_verbosity_error()
    weights = [p.resolve() for p in Path(checkpoint_dir).glob("*.safetensors")]
    ours = arch is not None and arch.og_builder_class is not None
    dispatch = og_compat.dispatching_to(arch, builder_class(arch)) if ours else contextlib.nullcontext()
    try:
        with captured_output("onnxruntime-genai builder"), reclaiming_mapped_memory(weights), dispatch:
            parsed = og.parse_extra_options(None, str(checkpoint_dir), str(out), precision, execution_provider, str(cache), kv)
            if arch is not None and arch.og_dispatch_as:
                og_compat.dispatch_as(parsed, arch.og_dispatch_as)
            og.create_model(None, str(checkpoint_dir), str(out), precision, execution_provider, str(cache), **parsed)
    except Exception as exc:  # whatever og's builder raised, reported as its failure, with its type and text
        raise Qwen3VLExportError(f"onnxruntime-genai's builder failed on the text decoder: {type(exc).__name__}: {exc}") from exc
    finally:
        hf_logging.set_verbosity(verbosity)
        shutil.rmtree(cache, ignore_errors=True)
    return out
