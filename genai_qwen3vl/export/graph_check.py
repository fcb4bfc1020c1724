"""The export's own check of every graph it writes, before the folder is published.

Weight-free (graphs are read without their external data, so the check costs no memory):

* the graph is whole: every node input, graph output and subgraph reference has a producer
  (a node, a graph input or an initializer), and no value is produced twice: what onnxruntime
  checks when it loads a graph ("Graph output (present.0.key) does not exist in the graph")
  and ``onnx.checker`` cannot, since it does not know og's contrib ops;
* the declared inputs and outputs match the I/O contract (names, dtypes, fixed and symbolic
  dims), with the KV cache of every full-attention layer and the state of every linear-attention
  one (Qwen3.5);
* the decoder's attention op is the one the target's genai_config.json is written for (og shares
  past and present buffers only for GroupQueryAttention).

The tests also load every graph of every exported target in an onnxruntime session.
"""

from __future__ import annotations

import collections
from pathlib import Path

import onnx

from ..errors import Qwen3VLExportError
from ..model import io_contract
from ..model.precisions import Target
from ..model.spec import Qwen3VLSpec
from ..onnx_format import ONNX_TO_NAME

ATTENTION_OPS = ("GroupQueryAttention", "MultiHeadAttention", "Attention", "PagedAttention", "SparseAttention")


def _shape(value: onnx.ValueInfoProto) -> tuple:
    return tuple(d.dim_param if d.dim_param else d.dim_value for d in value.type.tensor_type.shape.dim)


def dataflow_problems(graph: onnx.GraphProto, outer: frozenset[str] = frozenset()) -> list[str]:
    """Values used but never produced, and values produced twice, in ``graph`` and its subgraphs
    (which may read the values of the graphs around them, ``outer``)."""
    produced = collections.Counter([v.name for v in graph.input] + [t.name for t in graph.initializer])
    produced.update(o for n in graph.node for o in n.output if o)
    problems = [f"{name} is produced more than once" for name, count in sorted(produced.items()) if count > 1]
    known = outer | set(produced)
    for node in graph.node:
        for name in node.input:
            if name and name not in known:
                problems.append(f"node {node.name or node.op_type} reads {name}, which nothing produces")
        for attribute in node.attribute:
            subgraphs = [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs)
            for sub in subgraphs:
                problems += dataflow_problems(sub, frozenset(known))
    for output in graph.output:
        if output.name not in known:
            problems.append(f"graph output {output.name} does not exist in the graph")
    return problems


def io_problems(model: onnx.ModelProto, contract: io_contract.GraphContract, spec: Qwen3VLSpec, io_dtype: str) -> list[str]:
    """Differences between the graph's declared inputs/outputs and the contract: names, dtypes
    (``io_dtype``: the float type the graphs exchange), fixed dims (symbolic ones stay symbolic)."""
    values = {v.name: v for v in list(model.graph.input) + list(model.graph.output)}
    problems = []
    state = io_contract.linear_state(spec) if contract is io_contract.DECODER else ()
    for decl in contract.inputs + contract.outputs + state:
        value = values.get(decl.name)
        if value is None:
            problems.append(f"missing {decl.name}")
            continue
        dtype = ONNX_TO_NAME.get(value.type.tensor_type.elem_type, str(value.type.tensor_type.elem_type))
        if dtype != decl.concrete_dtype(io_dtype):
            problems.append(f"{decl.name} has dtype {dtype}, contract says {decl.concrete_dtype(io_dtype)}")
        got, want = _shape(value), decl.concrete_shape(spec)
        if len(got) != len(want):
            problems.append(f"{decl.name} has rank {len(got)}, contract says {len(want)}")
            continue
        for axis, (g, w) in enumerate(zip(got, want, strict=True)):
            if w == io_contract.LOGITS_POSITIONS:
                if not (g == 1 or (isinstance(g, str) and g)):
                    problems.append(f"{decl.name} dim {axis} is {g!r}, contract says a symbolic dim or 1")
                continue
            if isinstance(w, int) and g != w:
                problems.append(f"{decl.name} dim {axis} is {g}, contract says {w}")
            if isinstance(w, str) and (isinstance(g, int) and g > 0):
                problems.append(f"{decl.name} dim {axis} is fixed to {g}, contract says symbolic {w}")
    if contract is io_contract.DECODER:
        missing = [name for name in io_contract.kv_cache_names(spec) if name not in values]
        if missing:
            problems.append(f"missing {', '.join(missing)}")
    return problems


def attention_problems(model: onnx.ModelProto, target: Target) -> list[str]:
    ops = sorted({n.op_type for n in model.graph.node if n.op_type in ATTENTION_OPS})
    if ops != [target.attention_op]:
        return [f"its attention ops are {ops or 'none'}; -p {target.precision} -e {target.provider} needs {target.attention_op}"]
    return []


def check_graph(path: Path, contract: io_contract.GraphContract, spec: Qwen3VLSpec, target: Target) -> None:
    """Raise naming every problem of the graph at ``path`` (see the module docstring)."""
    model = onnx.load(str(path), load_external_data=False)
    problems = dataflow_problems(model.graph) + io_problems(model, contract, spec, target.io_dtype)
    if contract is io_contract.DECODER:
        problems += attention_problems(model, target)
    if problems:
        raise Qwen3VLExportError(f"{path.name} is not a valid graph for this export: " + "; ".join(problems))
