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

import logging
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .errors import Qwen3VLExportError
from .logs import captured_output
from .spec import Qwen3VLSpec

log = logging.getLogger(__name__)

OG_DECODER_FILES = ("model.onnx", "model.onnx.data")


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
    try:
        with captured_output("onnxruntime-genai builder"):
            parsed = parse_extra_options(
                None, str(checkpoint_dir), str(out), precision, execution_provider, str(cache), kv
            )
            create_model(None, str(checkpoint_dir), str(out), precision, execution_provider, str(cache), **parsed)
    except Exception as exc:
        raise Qwen3VLExportError(
            f"onnxruntime-genai's builder failed on the text decoder: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return out


def _const(name: str, values) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


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
        if mlp_out not in by_output:
            raise Qwen3VLExportError(f"og's decoder: {mlp_out} has no producer")
        s = _const(f"/model/layers.{k}/deepstack/constants/starts", [(k + 1) * hidden])
        e = _const(f"/model/layers.{k}/deepstack/constants/ends", [(k + 2) * hidden])
        graph.initializer.extend([s, e])
        sliced = f"/model/layers.{k}/deepstack/Slice/output_0"
        added = f"/model/layers.{k}/deepstack/Add/output_0"
        inserts[consumer_idx] = [
            helper.make_node(
                "Slice", ["inputs_embeds", s.name, e.name, axes.name], [sliced], name=f"/model/layers.{k}/deepstack/Slice"
            ),
            helper.make_node("Add", [mlp_out, sliced], [added], name=f"/model/layers.{k}/deepstack/Add"),
        ]
        consumer.input[1] = added

    new_nodes.append(slice_main)
    for i, node in enumerate(nodes):
        new_nodes.extend(inserts.get(i, []))
        new_nodes.append(node)
    del graph.node[:]
    graph.node.extend(new_nodes)
    return model


def build_decoder(
    checkpoint_dir: Path,
    spec: Qwen3VLSpec,
    work_dir: Path,
    out_dir: Path,
    precision: str,
    execution_provider: str,
    og_options: dict[str, str],
) -> Path:
    """Build og's decoder, add DeepStack, write ``model.onnx`` (+ ``.data``) into ``out_dir``."""
    og_dir = run_og_builder(checkpoint_dir, work_dir, precision, execution_provider, og_options)
    src = og_dir / "model.onnx"
    if not src.is_file():
        raise Qwen3VLExportError(f"onnxruntime-genai's builder wrote no {src.name} into {og_dir}")
    model = onnx.load(str(src), load_external_data=False)
    add_deepstack(model, spec)
    dst = Path(out_dir) / "model.onnx"
    onnx.save(model, str(dst))
    data = og_dir / "model.onnx.data"
    if data.is_file():
        shutil.move(str(data), str(Path(out_dir) / data.name))
    return dst
