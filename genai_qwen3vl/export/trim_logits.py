"""Trimmed prefill logits: og's LM head on the last position only.

og's builder applies the LM head to every prompt position ([1, 1024, 151936] floats for a
1024-token prompt at Qwen3-VL-2B's widths) although og samples
from the last one. og 0.18 recognizes a decoder whose logits have a fixed position dim of 1
("trimmed prefill logits") and reads them as such::

    before                                   after
    final norm  [B, S, H]                    final norm  [B, S, H]
        |                                        |
    /lm_head/MatMul                          /lm_head/last_token/Slice  (axis 1, [-1:])
        |                                        |   [B, 1, H]
    logits [B, S, vocab]                     /lm_head/MatMul
                                                 |
                                             logits [B, 1, vocab]
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from ..errors import Qwen3VLExportError
from . import og_compat
from .deepstack import int64_constant


def trim_prefill_logits(model: onnx.ModelProto) -> onnx.ModelProto:
    """Compute the LM head for the last position only: ``logits`` becomes [B, 1, vocab]."""
    graph = model.graph
    head = next((n for n in graph.node if n.name.startswith(og_compat.LM_HEAD_MATMUL)), None)
    if head is None:
        raise Qwen3VLExportError(f"og's decoder has no {og_compat.LM_HEAD_MATMUL} node; cannot trim its prefill logits")
    starts = int64_constant("/lm_head/last_token/constants/starts", [-1])
    ends = int64_constant("/lm_head/last_token/constants/ends", [np.iinfo(np.int64).max])
    axes = int64_constant("/lm_head/last_token/constants/axes", [1])
    graph.initializer.extend([starts, ends, axes])
    sliced = "/lm_head/last_token/Slice/output_0"
    node = helper.make_node("Slice", [head.input[0], starts.name, ends.name, axes.name], [sliced], name="/lm_head/last_token/Slice")
    head.input[0] = sliced
    nodes = list(graph.node)
    nodes.insert(nodes.index(head), node)
    del graph.node[:]
    graph.node.extend(nodes)
    logits = next(o for o in graph.output if o.name == og_compat.LOGITS)
    seq = logits.type.tensor_type.shape.dim[1]
    seq.ClearField("dim_param")
    seq.dim_value = 1
    return model
