"""Streaming int4 weight-only quantization of og's fp32 decoder.

og's builder quantizes by serializing the whole fp32 model into one protobuf in memory and
handing it to onnxruntime's ``MatMulNBitsQuantizer``: about 4x the checkpoint's size for
Qwen3-VL-2B. This does the same transformation one weight at a time: each MatMul with a
constant 2-D float32 weight becomes the ``MatMulNBits`` node that quantizer writes (same node
and initializer names, same attributes, weights packed by the same onnxruntime kernel,
``quantize_matmul_4bits``), reading each weight from the external data file and
streaming every initializer into a new one. ``tests/export/test_quantize.py`` checks the result
against og's own int4 output, node for node and byte for byte::

    before                                    after
    x   W float32 [K, N] (initializer)        x   W_Q4 uint8 [N, K/block, block/2]   W_scales float32 [N, K/block]
    |  /                                      |  /                                  /
    MatMul  (same name)                       com.microsoft.MatMulNBits  (name + "_Q4"; K, N, bits=4, block_size,
    |                                         |                          accuracy_level)
    y                                         y
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

_ALIGN = 64
# MatMuls left in float: a mixture-of-experts router (its logits pick the experts; 4-bit router
# weights would flip near-tied choices, and the router is 0.2% of an expert layer's weights)
KEEP_FLOAT = ("/moe/router/MatMul",)


class _DataWriter:
    """Appends tensors to an external data file and points initializers at them."""

    def __init__(self, path: Path):
        self.path = path
        self.file = open(path, "wb")
        self.offset = 0

    def write(self, tensor: onnx.TensorProto, payload) -> None:
        pad = -self.offset % _ALIGN
        if pad:
            self.file.write(b"\0" * pad)
            self.offset += pad
        view = memoryview(payload).cast("B")
        self.file.write(view)
        del tensor.external_data[:]
        tensor.ClearField("raw_data")
        tensor.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", self.path.name), ("offset", str(self.offset)), ("length", str(view.nbytes))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        self.offset += view.nbytes

    def close(self) -> None:
        self.file.close()


def _tensor(name: str, data_type: int, shape) -> onnx.TensorProto:
    tensor = onnx.TensorProto()
    tensor.name = name
    tensor.data_type = data_type
    tensor.dims.extend(int(d) for d in shape)
    return tensor


def _external(tensor: onnx.TensorProto) -> dict[str, str]:
    return {e.key: e.value for e in tensor.external_data}


def _payload(tensor: onnx.TensorProto, folder: Path, files: dict) -> bytes:
    """The raw bytes of an initializer, inline or read from its external file (read, not
    memory-mapped: mapped pages would stay resident and count against the process)."""
    if tensor.data_location != onnx.TensorProto.EXTERNAL:
        return numpy_helper.to_array(tensor).tobytes()
    info = _external(tensor)
    location = info["location"]
    if location not in files:
        files[location] = open(folder / location, "rb")
    handle = files[location]
    handle.seek(int(info.get("offset", 0)))
    length = int(info["length"])
    data = handle.read(length)
    if len(data) != length:
        raise ValueError(f"{folder / location} is shorter than its initializer {tensor.name} needs")
    return data


def read_initializers(model: onnx.ModelProto, folder: Path, names) -> dict[str, np.ndarray]:
    """The named initializers of a graph loaded without its external data, as arrays, read from
    the files beside it (without onnx's loader, which refuses weights files with several hard
    links, as a validation copy of a folder has)."""
    inits = {t.name: t for t in model.graph.initializer}
    files: dict = {}
    try:
        arrays = {}
        for name in names:
            tensor = inits[name]
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
            arrays[name] = np.frombuffer(_payload(tensor, Path(folder), files), dtype=dtype).reshape(tuple(tensor.dims))
        return arrays
    finally:
        for handle in files.values():
            handle.close()


def set_int_attribute(node: onnx.NodeProto, name: str, value: int) -> None:
    for attr in node.attribute:
        if attr.name == name:
            attr.i = value
            return
    node.attribute.append(helper.make_attribute(name, value))


def quantize_int4(
    src_model: Path,
    dst_model: Path,
    block_size: int = 32,
    accuracy_level: int = 4,
    is_symmetric: bool = True,
    keep_float: tuple[str, ...] = KEEP_FLOAT,
) -> Path:
    """Write ``dst_model`` (+ ``<name>.data``): ``src_model`` with every MatMul on a constant
    float32 [K, N] weight replaced by an int4 ``MatMulNBits``, except the MatMuls whose names
    end with one of ``keep_float``. ``QMoE`` nodes (experts og's builder quantized) get the same
    ``accuracy_level``."""
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits

    src_model, dst_model = Path(src_model), Path(dst_model)
    dst_model.parent.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(src_model), load_external_data=False)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    files: dict = {}
    writer = _DataWriter(dst_model.with_name(dst_model.name + ".data"))
    kept: list[onnx.TensorProto] = []
    quantized: set[str] = set()
    new_nodes = []
    try:
        for node in graph.node:
            if node.op_type == "QMoE" and accuracy_level:
                set_int_attribute(node, "accuracy_level", accuracy_level)
            weight = inits.get(node.input[1]) if node.op_type == "MatMul" and node.domain == "" else None
            if weight is not None and node.name.endswith(keep_float):
                weight = None
            if weight is None or weight.data_type != onnx.TensorProto.FLOAT or len(weight.dims) != 2:
                new_nodes.append(node)
                continue
            rows, cols = weight.dims
            w = np.frombuffer(_payload(weight, src_model.parent, files), dtype=np.float32).reshape(rows, cols)
            k_blocks = (rows + block_size - 1) // block_size
            if k_blocks * block_size != rows:
                w = np.pad(w, ((0, k_blocks * block_size - rows), (0, 0)))
            packed = np.zeros((cols, k_blocks, block_size // 2), dtype=np.uint8)
            scales = np.zeros((cols, k_blocks), dtype=np.float32)
            zero_points = np.zeros((cols, (k_blocks + 1) // 2), dtype=np.uint8)
            quantize_matmul_4bits(packed, np.ascontiguousarray(w), scales, zero_points, block_size, cols, rows, is_symmetric)
            del w
            q_tensor = _tensor(weight.name + "_Q4", onnx.TensorProto.UINT8, packed.shape)
            s_tensor = _tensor(weight.name + "_scales", onnx.TensorProto.FLOAT, scales.shape)
            writer.write(q_tensor, packed)
            writer.write(s_tensor, scales)
            kept += [q_tensor, s_tensor]
            inputs = [node.input[0], q_tensor.name, s_tensor.name]
            if not is_symmetric:
                z_tensor = _tensor(weight.name + "_zero_points", onnx.TensorProto.UINT8, zero_points.shape)
                writer.write(z_tensor, zero_points)
                kept.append(z_tensor)
                inputs.append(z_tensor.name)
            attrs = dict(K=rows, N=cols, bits=4, block_size=block_size)
            if accuracy_level:
                attrs["accuracy_level"] = accuracy_level
            new_nodes.append(
                helper.make_node("MatMulNBits", inputs, list(node.output), name=node.name + "_Q4", domain="com.microsoft", **attrs)
            )
            quantized.add(weight.name)
        still_used = {name for n in new_nodes for name in n.input}
        for tensor in graph.initializer:
            if tensor.name in quantized and tensor.name not in still_used:
                continue
            copy = onnx.TensorProto()
            copy.CopyFrom(tensor)
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                writer.write(copy, _payload(tensor, src_model.parent, files))
            kept.append(copy)
    finally:
        writer.close()
        for handle in files.values():
            handle.close()
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(dst_model))
    return dst_model
