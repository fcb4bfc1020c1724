"""Checks of the exported folder: graph I/O against the contract (always run by the builder)
and parity against transformers (``genai_qwen3vl.parity``, used by the tests and --validate)."""

from __future__ import annotations

from pathlib import Path

import onnx

from . import io_contract
from .errors import Qwen3VLExportError
from .spec import Qwen3VLSpec

_ONNX_TO_NAME = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.BFLOAT16: "bfloat16",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
}


def _shape(value: onnx.ValueInfoProto) -> tuple:
    return tuple(d.dim_param if d.dim_param else d.dim_value for d in value.type.tensor_type.shape.dim)


def check_graph_io(path: Path, contract: io_contract.GraphContract, spec: Qwen3VLSpec, io_dtype: str = "fp32") -> None:
    """Raise if the graph's declared inputs/outputs differ from the contract's names, dtypes
    (``io_dtype``: the float type the graphs exchange) or fixed dims (symbolic dims must stay
    symbolic)."""
    model = onnx.load(str(path), load_external_data=False)
    values = {v.name: v for v in list(model.graph.input) + list(model.graph.output)}
    problems = []
    for decl in contract.inputs + contract.outputs:
        value = values.get(decl.name)
        if value is None:
            problems.append(f"missing {decl.name}")
            continue
        dtype = _ONNX_TO_NAME.get(value.type.tensor_type.elem_type, str(value.type.tensor_type.elem_type))
        if dtype != decl.concrete_dtype(io_dtype):
            problems.append(f"{decl.name} has dtype {dtype}, contract says {decl.concrete_dtype(io_dtype)}")
        got, want = _shape(value), decl.concrete_shape(spec)
        if len(got) != len(want):
            problems.append(f"{decl.name} has rank {len(got)}, contract says {len(want)}")
            continue
        for axis, (g, w) in enumerate(zip(got, want)):
            if isinstance(w, int) and g != w:
                problems.append(f"{decl.name} dim {axis} is {g}, contract says {w}")
            if isinstance(w, str) and (isinstance(g, int) and g > 0):
                problems.append(f"{decl.name} dim {axis} is fixed to {g}, contract says symbolic {w}")
    if contract is io_contract.DECODER:
        layers = spec.text.num_hidden_layers
        for pattern in (io_contract.PAST_KEY, io_contract.PAST_VALUE, io_contract.PRESENT_KEY, io_contract.PRESENT_VALUE):
            missing = [pattern % i for i in range(layers) if pattern % i not in values]
            if missing:
                problems.append(f"missing {', '.join(missing)}")
    if problems:
        raise Qwen3VLExportError(f"{path.name} does not match its I/O contract: " + "; ".join(problems))
