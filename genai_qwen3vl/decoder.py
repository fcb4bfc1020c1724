"""The text decoder: og's own builder, extended for DeepStack.

This is the only module that imports og's model builder. ``run_og_builder`` is the one
adapter that knows its ``extra_options`` keys; ``add_deepstack`` rewrites the graph it writes
so that ``inputs_embeds`` is (1+K)*H wide:

* channels [0:H] are the decoder's input embedding;
* channels [(k+1)*H:(k+2)*H] are added to the residual stream right after layer k, as HF's
  ``_deepstack_process`` does. In og's graph that residual sum is formed by the next
  layer's ``SkipSimplifiedLayerNormalization`` (inputs: residual, MLP output), so the slice is
  added to the MLP output feeding it.

The embedding graph puts zeros in those channels at text tokens and decode steps, where the
adds are no-ops.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .errors import Qwen3VLExportError
from .logs import captured_output
from .spec import Qwen3VLSpec

log = logging.getLogger(__name__)

OG_DECODER_FILES = ("model.onnx", "model.onnx.data")


def og_builder_options(options) -> dict[str, str]:
    """Our typed options as og's builder ``extra_options`` (the only place that knows its keys)."""
    extra: dict[str, str] = {"hf_remote": "true" if options.trust_remote_code else "false"}
    if options.precision == "int4":
        extra["block_size"] = str(options.int4_block_size)
        extra["accuracy_level"] = str(options.accuracy_level)
    return extra


def text_only_view(checkpoint_dir: Path, work_dir: Path) -> Path:
    """A view of the checkpoint (links to its files) whose config has no vision blocks, so that
    og's builder, which loads the whole ``Qwen3VLForConditionalGeneration``, does not also hold
    the vision tower in memory. The text config is untouched."""
    view = Path(work_dir) / "text_only_checkpoint"
    view.mkdir(parents=True, exist_ok=True)
    for item in Path(checkpoint_dir).iterdir():
        if item.name != "config.json" and item.is_file():
            (view / item.name).symlink_to(item.resolve())
    config = json.loads((Path(checkpoint_dir) / "config.json").read_text(encoding="utf-8"))
    config["vision_config"] = {**config.get("vision_config", {}), "depth": 0, "deepstack_visual_indexes": []}
    (view / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return view


@contextlib.contextmanager
def released_file_pages(paths, interval: float = 0.25) -> Iterator[None]:
    """While the block runs, keep asking the kernel to reclaim this process's resident pages of
    memory maps of ``paths`` (Linux ``madvise(MADV_PAGEOUT)``, kernel 5.4+; elsewhere a no-op).

    og's builder loads the checkpoint memory-mapped and touches every weight once while it
    writes the fp32 graph: the pages stay resident and the export's RSS grows by the size of the
    weights, although the kernel could drop them at any time. MADV_PAGEOUT only reclaims: clean
    file pages are dropped (a later access reads them again), modified ones are kept or swapped,
    never lost. It keeps the peak RSS near the memory the export really holds."""
    import ctypes
    import sys
    import threading

    if not sys.platform.startswith("linux"):
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    targets = {str(Path(p).resolve()) for p in paths}
    stop = threading.Event()

    def release() -> None:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5].strip() in targets:
                    start, end = (int(x, 16) for x in fields[0].split("-"))
                    libc.madvise(start, end - start, 21)  # MADV_PAGEOUT

    def loop() -> None:
        while not stop.wait(interval):
            release()

    thread = threading.Thread(target=loop, name="release-checkpoint-pages", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def run_og_builder(
    checkpoint_dir: Path, work_dir: Path, precision: str, execution_provider: str, extra: dict[str, str]
) -> Path:
    """Run og's ``create_model`` with ``exclude_embeds`` into ``work_dir/og``; returns that folder.

    og's builder prints progress bars and notes on stdout/stderr; they go to the debug log.
    """
    from onnxruntime_genai.models.builder import create_model, parse_extra_options

    out = Path(work_dir) / "og"
    cache = Path(work_dir) / "og_cache"
    options = {"exclude_embeds": "true", "filename": "model.onnx", **extra}
    kv = [f"{k}={v}" for k, v in options.items()]
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    # the text-only view leaves the vision weights unused; transformers reports that loudly
    hf_logging.set_verbosity_error()
    weights = [p.resolve() for p in Path(checkpoint_dir).glob("*.safetensors")]
    try:
        with captured_output("onnxruntime-genai builder"), released_file_pages(weights):
            parsed = parse_extra_options(
                None, str(checkpoint_dir), str(out), precision, execution_provider, str(cache), kv
            )
            create_model(None, str(checkpoint_dir), str(out), precision, execution_provider, str(cache), **parsed)
    except Exception as exc:
        raise Qwen3VLExportError(
            f"onnxruntime-genai's builder failed on the text decoder: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        hf_logging.set_verbosity(verbosity)
        shutil.rmtree(cache, ignore_errors=True)
    return out


def _const(name: str, values) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


def _cast_target(node: onnx.NodeProto) -> int | None:
    if node.op_type != "Cast":
        return None
    return next(a.i for a in node.attribute if a.name == "to")


def add_deepstack(model: onnx.ModelProto, spec: Qwen3VLSpec) -> onnx.ModelProto:
    """Widen ``inputs_embeds`` to (1+K)*H and add the DeepStack slices after layers 0..K-1.

    Works on the graph only (initializers may stay external). Raises if og's graph does not
    have the layout this relies on, rather than writing a decoder that silently drops DeepStack.
    """
    graph = model.graph
    hidden = spec.text.hidden_size
    width = spec.feature_width
    embeds = next((i for i in graph.input if i.name == "inputs_embeds"), None)
    if embeds is None:
        raise Qwen3VLExportError("og's decoder has no inputs_embeds input (was exclude_embeds ignored?)")
    last_dim = embeds.type.tensor_type.shape.dim[-1]
    if last_dim.dim_value != hidden:
        raise Qwen3VLExportError(f"og's inputs_embeds is {last_dim.dim_value} wide, expected hidden_size={hidden}")
    last_dim.dim_value = width

    nodes = list(graph.node)
    by_output = {out: n for n in nodes for out in n.output}
    new_nodes: list[onnx.NodeProto] = []
    axes = _const("/model/deepstack/constants/axes", [-1])
    graph.initializer.append(axes)

    # channels [0:H] feed the decoder wherever inputs_embeds did
    main = "/model/deepstack/embeds/Slice/output_0"
    starts = _const("/model/deepstack/constants/embeds_starts", [0])
    ends = _const("/model/deepstack/constants/embeds_ends", [hidden])
    graph.initializer.extend([starts, ends])
    for node in nodes:
        for i, name in enumerate(node.input):
            if name == "inputs_embeds":
                node.input[i] = main
    slice_main = helper.make_node(
        "Slice", ["inputs_embeds", starts.name, ends.name, axes.name], [main], name="/model/deepstack/embeds/Slice"
    )

    inserts: dict[int, list[onnx.NodeProto]] = {}
    for k in range(spec.num_deepstack):
        residual = f"/model/layers.{k}/post_attention_layernorm/output_3"
        consumer_idx = next(
            (
                i
                for i, n in enumerate(nodes)
                if n.op_type == "SkipSimplifiedLayerNormalization" and len(n.input) > 1 and n.input[0] == residual
            ),
            None,
        )
        if consumer_idx is None:
            raise Qwen3VLExportError(
                f"cannot find where layer {k}'s output is formed in og's decoder graph "
                f"(no SkipSimplifiedLayerNormalization reads {residual}); this og version's graph layout is unsupported"
            )
        consumer = nodes[consumer_idx]
        mlp_out = consumer.input[1]
        producer = by_output.get(mlp_out)
        if producer is None:
            raise Qwen3VLExportError(f"og's decoder: {mlp_out} has no producer")
        s = _const(f"/model/layers.{k}/deepstack/constants/starts", [(k + 1) * hidden])
        e = _const(f"/model/layers.{k}/deepstack/constants/ends", [(k + 2) * hidden])
        graph.initializer.extend([s, e])
        prefix = f"/model/layers.{k}/deepstack"
        sliced = f"{prefix}/Slice/output_0"
        added = f"{prefix}/Add/output_0"
        new = [helper.make_node("Slice", ["inputs_embeds", s.name, e.name, axes.name], [sliced], name=f"{prefix}/Slice")]
        # fp16/bf16 decoders keep the residual stream in fp32 (og casts the skip inputs); add there
        residual_type = _cast_target(producer)
        if residual_type is not None and residual_type != embeds.type.tensor_type.elem_type:
            new.append(helper.make_node("Cast", [sliced], [f"{prefix}/Cast/output_0"], name=f"{prefix}/Cast", to=residual_type))
            sliced = f"{prefix}/Cast/output_0"
        new.append(helper.make_node("Add", [mlp_out, sliced], [added], name=f"{prefix}/Add"))
        inserts[consumer_idx] = new
        consumer.input[1] = added

    new_nodes.append(slice_main)
    for i, node in enumerate(nodes):
        new_nodes.extend(inserts.get(i, []))
        new_nodes.append(node)
    del graph.node[:]
    graph.node.extend(new_nodes)
    return model


def prune_prefill_logits(model: onnx.ModelProto) -> onnx.ModelProto:
    """Compute the LM head for the last position only: ``logits`` becomes [B, 1, vocab].

    og's builder applies the LM head to every prompt position ([1, 1024, 151936] floats for a
    1024-token prompt) although og samples from the last one. og 0.18 recognizes a decoder whose
    logits have a fixed sequence dim of 1 ("trimmed prefill logits") and reads them as such."""
    graph = model.graph
    head = next((n for n in graph.node if n.name.startswith("/lm_head/MatMul")), None)
    if head is None:
        raise Qwen3VLExportError("og's decoder has no /lm_head/MatMul node; cannot trim its prefill logits")
    starts = _const("/lm_head/last_token/constants/starts", [-1])
    ends = _const("/lm_head/last_token/constants/ends", [np.iinfo(np.int64).max])
    axes = _const("/lm_head/last_token/constants/axes", [1])
    graph.initializer.extend([starts, ends, axes])
    sliced = "/lm_head/last_token/Slice/output_0"
    node = helper.make_node("Slice", [head.input[0], starts.name, ends.name, axes.name], [sliced], name="/lm_head/last_token/Slice")
    head.input[0] = sliced
    nodes = list(graph.node)
    nodes.insert(nodes.index(head), node)
    del graph.node[:]
    graph.node.extend(nodes)
    logits = next(o for o in graph.output if o.name == "logits")
    seq = logits.type.tensor_type.shape.dim[1]
    seq.ClearField("dim_param")
    seq.dim_value = 1
    return model


def build_decoder(
    checkpoint_dir: Path,
    spec: Qwen3VLSpec,
    work_dir: Path,
    out_dir: Path,
    precision: str,
    execution_provider: str,
    og_options: dict[str, str],
    prune_logits: bool = True,
) -> Path:
    """Build og's decoder, add DeepStack (and, with ``prune_logits``, last-position-only prefill
    logits), write ``model.onnx`` (+ ``.data``) into ``out_dir``.

    int4 on CPU: og's builder writes the fp32 decoder (it streams the weights to disk) and
    ``quantize.quantize_int4`` turns it into og's int4 graph one weight at a time, instead of
    og's own quantization pass, which holds the whole fp32 model in memory."""
    view = text_only_view(checkpoint_dir, work_dir)
    stream_int4 = precision == "int4" and execution_provider == "cpu"
    og_precision = "fp32" if stream_int4 else precision
    og_extra = {k: v for k, v in og_options.items() if k == "hf_remote"} if stream_int4 else og_options
    og_dir = run_og_builder(view, work_dir, og_precision, execution_provider, og_extra)
    src = og_dir / "model.onnx"
    if not src.is_file():
        raise Qwen3VLExportError(f"onnxruntime-genai's builder wrote no {src.name} into {og_dir}")
    if stream_int4:
        from .quantize import quantize_int4

        quantized = Path(work_dir) / "int4" / "model.onnx"
        quantize_int4(src, quantized, int(og_options["block_size"]), int(og_options["accuracy_level"]))
        shutil.rmtree(og_dir)
        src, og_dir = quantized, quantized.parent
    model = onnx.load(str(src), load_external_data=False)
    add_deepstack(model, spec)
    if prune_logits:
        prune_prefill_logits(model)
    dst = Path(out_dir) / "model.onnx"
    onnx.save(model, str(dst))
    data = og_dir / "model.onnx.data"
    if data.is_file():
        shutil.move(str(data), str(Path(out_dir) / data.name))
    return dst
