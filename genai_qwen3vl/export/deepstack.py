"""DeepStack in og's decoder graph: ``inputs_embeds`` (1+K)*H wide, slice k+1 added after layer k.

HF's ``Qwen3VLTextModel._deepstack_process`` adds the k-th DeepStack feature set to the hidden
states at visual positions right after decoder layer k (k < K). og has no input for it, so the
extra features ride along in ``inputs_embeds``: the embedding graph writes the token embedding
into channels [0:H] and, at image and video positions, the K DeepStack rows into the channels
after it (zeros elsewhere, which makes every add below a no-op at text tokens and decode steps).

og's graph forms the residual sum after layer k in the *next* layer's
``SkipSimplifiedLayerNormalization`` (inputs: residual stream, layer k's MLP output), so the
slice is added to the MLP output feeding it::

    before                                          after
                                                    inputs_embeds [B, S, (1+K)H]
                                                      |                   |
    inputs_embeds [B, S, H]                         Slice [0:H]        Slice [(k+1)H:(k+2)H]
          |                                           |                   |
      layer 0 .. k                                layer 0 .. k      (Cast to the residual
          |                                           |              stream's dtype, fp16/bf16)
    layer k MLP down_proj ----+                 layer k MLP down_proj     |
                              |                       |                   |
    residual --> SkipSimplifiedLayerNorm        residual    Add <----------+
                 (layer k+1 / final norm)          |         |
                                                   +--> SkipSimplifiedLayerNorm
                                                        (layer k+1 / final norm)

Node names follow og's namespacing: ``/model/deepstack/embeds/Slice``,
``/model/layers.{k}/deepstack/{Slice,Cast,Add}``. The names of og's graph this anchors on are
``og_compat``'s (``layer_residual``, ``SKIP_NORM``, ``INPUTS_EMBEDS``).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import Qwen3VLExportError
from ..model.spec import Qwen3VLSpec
from . import og_compat


def int64_constant(name: str, values) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


def _cast_target(node: onnx.NodeProto) -> int | None:
    if node.op_type != "Cast":
        return None
    return next(a.i for a in node.attribute if a.name == "to")


def add_deepstack(model: onnx.ModelProto, spec: Qwen3VLSpec) -> onnx.ModelProto:
    """Widen ``inputs_embeds`` to (1+K)*H and add the DeepStack slices after layers 0..K-1 (see
    the module docstring for the picture).

    Works on the graph only (initializers may stay external). Raises if og's graph does not
    have the layout this relies on, rather than writing a decoder that silently drops DeepStack.
    """
    graph = model.graph
    hidden = spec.text.hidden_size
    width = spec.feature_width
    embeds = next((i for i in graph.input if i.name == og_compat.INPUTS_EMBEDS), None)
    if embeds is None:
        raise Qwen3VLExportError("og's decoder has no inputs_embeds input (was exclude_embeds ignored?)")
    last_dim = embeds.type.tensor_type.shape.dim[-1]
    if last_dim.dim_value != hidden:
        raise Qwen3VLExportError(f"og's inputs_embeds is {last_dim.dim_value} wide, expected hidden_size={hidden}")
    if spec.num_deepstack == 0:  # Qwen3.5: no DeepStack, og's graph as it is
        return model
    last_dim.dim_value = width

    nodes = list(graph.node)
    by_output = {out: n for n in nodes for out in n.output}
    new_nodes: list[onnx.NodeProto] = []
    axes = int64_constant("/model/deepstack/constants/axes", [-1])
    graph.initializer.append(axes)

    # channels [0:H] feed the decoder wherever inputs_embeds did
    main = "/model/deepstack/embeds/Slice/output_0"
    starts = int64_constant("/model/deepstack/constants/embeds_starts", [0])
    ends = int64_constant("/model/deepstack/constants/embeds_ends", [hidden])
    graph.initializer.extend([starts, ends])
    for node in nodes:
        for i, name in enumerate(node.input):
            if name == og_compat.INPUTS_EMBEDS:
                node.input[i] = main
    slice_main = helper.make_node(
        "Slice", [og_compat.INPUTS_EMBEDS, starts.name, ends.name, axes.name], [main], name="/model/deepstack/embeds/Slice"
    )

    inserts: dict[int, list[onnx.NodeProto]] = {}
    for k in range(spec.num_deepstack):
        residual = og_compat.layer_residual(k)
        consumer_idx = next(
            (i for i, n in enumerate(nodes) if n.op_type == og_compat.SKIP_NORM and len(n.input) > 1 and n.input[0] == residual),
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
        s = int64_constant(f"/model/layers.{k}/deepstack/constants/starts", [(k + 1) * hidden])
        e = int64_constant(f"/model/layers.{k}/deepstack/constants/ends", [(k + 2) * hidden])
        graph.initializer.extend([s, e])
        prefix = f"/model/layers.{k}/deepstack"
        sliced = f"{prefix}/Slice/output_0"
        added = f"{prefix}/Add/output_0"
        new = [helper.make_node("Slice", [og_compat.INPUTS_EMBEDS, s.name, e.name, axes.name], [sliced], name=f"{prefix}/Slice")]
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
