"""onnxruntime's fused attention for the vision tower.

Each vision block attends within segments (one per frame of each image). The export emits a
``genai_qwen3vl::SegmentAttention(q, k, v, all_equal, segment_length, segment_ids)`` placeholder
([1, P, D] each) per block; this module replaces it with an ``If``::

                         q, k, v [1, P, D]   all_equal   segment_length   segment_ids [P]
                                   |              |             |               |
                                   +------------> If <----------+---------------+
                          then (all frames equal) |  else (frames of different sizes)
             Reshape q, k, v [P/L, L, D]          |          Equal(ids, ids^T) -> Where(0, min) -> bias [1, 1, P, P]
                        |                         |                          |
     com.microsoft.MultiHeadAttention (no mask)   |   com.microsoft.MultiHeadAttention(q, k, v, attention_bias=bias)
                        |                         |                          |
             Reshape [1, P, D] -------------------+--------------------------+
                                                  |
                                           attention [1, P, D]

* all segments the same size (one image, or og's batched call of equal images, or the frame
  groups of a video): q, k, v are reshaped to [segments, length, D] and one
  ``MultiHeadAttention`` runs with no mask at all, which onnxruntime computes with its
  flash-attention kernel: no [heads, P, P] score tensor is ever materialized;
* otherwise: one ``MultiHeadAttention`` over all patches with a block-diagonal additive bias.

For a 1280x720 picture (3520 patches, 16 heads) the bias path would hold a [16, 3520, 3520]
score tensor (about 0.8 GB in fp32); the segmented path holds none.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DOMAIN, OP = "genai_qwen3vl", "SegmentAttention"


def _value(name: str, elem_type: int, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, shape)


def _branches(node: onnx.NodeProto, width: int, elem_type: int) -> tuple[onnx.GraphProto, onnx.GraphProto]:
    q, k, v, _, length, segments = node.input
    out = node.output[0]
    num_heads = next(a.i for a in node.attribute if a.name == "num_heads")
    p = node.name or out
    mha = dict(domain="com.microsoft", num_heads=num_heads)

    # then: equal segments -> a batch of segments, no mask (flash attention)
    batch_shape = f"{p}/equal/shape"
    then_nodes = [
        helper.make_node("Concat", [f"{p}/minus_one", length, f"{p}/width"], [batch_shape], axis=0, name=f"{p}/equal/Concat"),
    ]
    batched = []
    for name in (q, k, v):
        then_nodes.append(helper.make_node("Reshape", [name, batch_shape], [f"{name}/segments"], name=f"{p}/equal/Reshape_{len(batched)}"))
        batched.append(f"{name}/segments")
    then_nodes += [
        helper.make_node("MultiHeadAttention", batched, [f"{p}/equal/attention"], name=f"{p}/equal/MultiHeadAttention", **mha),
        helper.make_node("Reshape", [f"{p}/equal/attention", f"{p}/flat_shape"], [f"{out}/equal"], name=f"{p}/equal/Reshape_out"),
    ]
    then_graph = helper.make_graph(
        then_nodes,
        f"{p}/equal_segments",
        [],
        [_value(f"{out}/equal", elem_type, [1, None, width])],
        initializer=[
            numpy_helper.from_array(np.array([-1], np.int64), f"{p}/minus_one"),
            numpy_helper.from_array(np.array([width], np.int64), f"{p}/width"),
            numpy_helper.from_array(np.array([1, -1, width], np.int64), f"{p}/flat_shape"),
        ],
    )

    # else: one attention over all patches with a block-diagonal additive bias
    minimum = np.finfo(np.float16 if elem_type == TensorProto.FLOAT16 else np.float32).min
    else_nodes = [
        helper.make_node("Unsqueeze", [segments, f"{p}/axis1"], [f"{p}/mask/rows"], name=f"{p}/mask/Unsqueeze_rows"),
        helper.make_node("Unsqueeze", [segments, f"{p}/axis0"], [f"{p}/mask/cols"], name=f"{p}/mask/Unsqueeze_cols"),
        helper.make_node("Equal", [f"{p}/mask/rows", f"{p}/mask/cols"], [f"{p}/mask/same"], name=f"{p}/mask/Equal"),
        helper.make_node("CastLike", [f"{p}/zero", q], [f"{p}/mask/zero"], name=f"{p}/mask/CastLike_zero"),
        helper.make_node("CastLike", [f"{p}/minimum", q], [f"{p}/mask/minimum"], name=f"{p}/mask/CastLike_min"),
        helper.make_node("Where", [f"{p}/mask/same", f"{p}/mask/zero", f"{p}/mask/minimum"], [f"{p}/mask/bias2d"], name=f"{p}/mask/Where"),
        helper.make_node("Unsqueeze", [f"{p}/mask/bias2d", f"{p}/axes01"], [f"{p}/mask/bias"], name=f"{p}/mask/Unsqueeze_bias"),
        helper.make_node(
            "MultiHeadAttention", [q, k, v, "", "", f"{p}/mask/bias"], [f"{out}/masked"], name=f"{p}/masked/MultiHeadAttention", **mha
        ),
    ]
    else_graph = helper.make_graph(
        else_nodes,
        f"{p}/mixed_segments",
        [],
        [_value(f"{out}/masked", elem_type, [1, None, width])],
        initializer=[
            numpy_helper.from_array(np.array([1], np.int64), f"{p}/axis1"),
            numpy_helper.from_array(np.array([0], np.int64), f"{p}/axis0"),
            numpy_helper.from_array(np.array([0, 1], np.int64), f"{p}/axes01"),
            numpy_helper.from_array(np.array(0.0, np.float32), f"{p}/zero"),
            numpy_helper.from_array(np.array(minimum, np.float32), f"{p}/minimum"),
        ],
    )
    return then_graph, else_graph


def fuse_segment_attention(model_path: Path) -> Path:
    """Replace every SegmentAttention placeholder of a saved graph (weights stay where they are)."""
    model = onnx.load(str(model_path), load_external_data=False)
    graph = model.graph
    types = {v.name: v for v in list(graph.value_info) + list(graph.input) + list(graph.output)}
    nodes = []
    count = 0
    for node in graph.node:
        if node.domain != DOMAIN or node.op_type != OP:
            nodes.append(node)
            continue
        q = node.input[0]
        info = types.get(q)
        if info is None:
            raise ValueError(f"no type information for {q}; cannot build the fused attention")
        elem_type = info.type.tensor_type.elem_type
        width = info.type.tensor_type.shape.dim[-1].dim_value
        then_graph, else_graph = _branches(node, width, elem_type)
        nodes.append(
            helper.make_node(
                "If",
                [node.input[3]],
                list(node.output),
                name=(node.name or node.output[0]) + "/If",
                then_branch=then_graph,
                else_branch=else_graph,
            )
        )
        count += 1
    if not count:
        raise ValueError(f"{model_path} has no {DOMAIN}::{OP} placeholder to fuse")
    del graph.node[:]
    graph.node.extend(nodes)
    opsets = [o for o in model.opset_import if o.domain != DOMAIN]
    if not any(o.domain == "com.microsoft" for o in opsets):
        opsets.append(helper.make_opsetid("com.microsoft", 1))
    del model.opset_import[:]
    model.opset_import.extend(opsets)
    onnx.save(model, str(model_path))
    return Path(model_path)
