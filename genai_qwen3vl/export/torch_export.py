"""torch.onnx (dynamo) export of a wrapper module against its I/O contract."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from ..logs import captured_output
from ..model import io_contract
from ..model.precisions import DTYPE_NAMES


def torch_dtype(name: str) -> torch.dtype:
    """torch's dtype for one of our float type names ("fp32", "fp16", "bf16")."""
    return getattr(torch, DTYPE_NAMES[name])


def export_to_onnx(
    module: torch.nn.Module,
    args: tuple,
    contract: io_contract.GraphContract,
    dynamic_shapes: dict,
    out_dir: Path,
    patches: contextlib.AbstractContextManager | None = None,
) -> Path:
    """Export ``module`` to ``out_dir/contract.filename`` (+ ``.data``), I/O named by the contract."""
    path = Path(out_dir) / contract.filename
    with captured_output(f"torch.onnx ({contract.filename})"), patches or contextlib.nullcontext(), torch.no_grad():
        program = torch.onnx.export(
            module,
            args,
            dynamo=True,
            input_names=[t.name for t in contract.inputs],
            output_names=[t.name for t in contract.outputs],
            dynamic_shapes=dynamic_shapes,
            optimize=True,
        )
    name_dynamic_dims(program.model, contract)
    program.save(str(path), external_data=True)
    return path


def name_dynamic_dims(model, contract: io_contract.GraphContract) -> None:
    """Give the graph's symbolic dims the contract's names (dynamo writes s0, s1, ...)."""
    import onnx_ir as ir

    values = {v.name: v for v in list(model.graph.inputs) + list(model.graph.outputs)}
    for decl in contract.inputs + contract.outputs:
        value = values.get(decl.name)
        if value is None or value.shape is None:
            continue
        dims = list(value.shape)
        for axis, dim in enumerate(decl.shape):
            if isinstance(dim, str) and axis < len(dims) and not isinstance(dims[axis], int):
                dims[axis] = dim
        value.shape = ir.Shape(dims)
