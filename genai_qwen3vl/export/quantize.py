"""Streaming weight-only quantization of og's fp32 decoder, and of the embedding table.

og's builder quantizes by serializing the whole fp32 model into one protobuf in memory and
handing it to onnxruntime's ``MatMulNBitsQuantizer``: about 4x the checkpoint's size for
Qwen3-VL-2B. ``quantize_weights`` does the same transformation one weight at a time: each
MatMul with a constant 2-D float32 weight becomes a ``MatMulNBits`` node, reading each weight
from the external data file and streaming every initializer into a new one. A
``QuantLayout`` (``model/precisions.py``) says which weights get 4 or 8 bits, the block size,
and symmetry. With og's own layout (recipe ``rtn``) the
result is byte for byte og's own int4 output (same node and initializer names, attributes,
weights packed by the same onnxruntime kernel, ``quantize_matmul_4bits``):
``tests/export/test_quantize.py`` checks it::

    before                                    after
    x   W float32 [K, N] (initializer)        x   W_Q4 uint8 [N, K/block, block/2]   W_scales float32 [N, K/block]
    |  /                                      |  /                                  /
    MatMul  (same name)                       com.microsoft.MatMulNBits  (name + "_Q4"; K, N, bits=4, block_size,
    |                                         |                          accuracy_level)
    y                                         y

8-bit weights are ``W_Q8`` uint8 [N, K/block, block]; asymmetric layouts add ``W_zero_points``.
``quantize_embedding_table`` stores the embedding graph's token table the same way and looks
it up with ``GatherBlockQuantized``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from .. import onnx_format as fmt
from ..model.precisions import QuantLayout
from ..onnx_format import DataWriter, new_tensor, pack_bits, pack_zero_points, quantize_blocks, read_payload, set_int_attribute
from . import og_compat


def quantize_rows(rows: np.ndarray, bits: int, layout: QuantLayout):
    """Quantize the rows of ``rows`` [N, K] block-wise along K as ``layout`` says: (data uint8
    [N, K/block, block*bits/8], scales float32 [N, K/block], zero points uint8 packed as
    MatMulNBits reads them [N, ceil(K/block*bits/8)], or None). og's own layout (4 bits,
    symmetric) goes through onnxruntime's kernel, byte for byte og's int4."""
    cols, k = rows.shape
    blocks = -(-k // layout.block_size)
    if bits == 4 and layout.symmetric:
        w = np.ascontiguousarray(rows.T)  # [K, N], as the kernel takes it
        if blocks * layout.block_size != k:
            w = np.pad(w, ((0, blocks * layout.block_size - k), (0, 0)))
        packed = np.zeros((cols, blocks, layout.block_size // 2), dtype=np.uint8)
        scales = np.zeros((cols, blocks), dtype=np.float32)
        unused = np.zeros((cols, (blocks + 1) // 2), dtype=np.uint8)
        og_compat.quantize_matmul_4bits()(packed, w, scales, unused, layout.block_size, cols, k, True)
        return packed, scales, None
    q, scales, zeros = quantize_blocks(rows, bits, layout.block_size, layout.symmetric)
    if zeros is not None and bits == 4:
        zeros = pack_zero_points(zeros, 4)
    return pack_bits(q, bits), scales, zeros


def _quantized_tensors(name: str, bits: int, data: np.ndarray, scales: np.ndarray, zeros) -> list:
    """(initializer, payload) pairs of one quantized weight, named as og names them."""
    out = [
        (new_tensor(name + fmt.quant_suffix(bits), onnx.TensorProto.UINT8, data.shape), data),
        (new_tensor(name + "_scales", onnx.TensorProto.FLOAT, scales.shape), scales),
    ]
    if zeros is not None:
        out.append((new_tensor(name + "_zero_points", onnx.TensorProto.UINT8, zeros.shape), zeros))
    return out


def _copy_initializers(graph, drop: set[str], writer: DataWriter, folder: Path, files: dict) -> list[onnx.TensorProto]:
    """Copies of the graph's initializers but ``drop``, external payloads streamed into ``writer``."""
    kept = []
    for tensor in graph.initializer:
        if tensor.name in drop:
            continue
        copy = onnx.TensorProto()
        copy.CopyFrom(tensor)
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            writer.write(copy, read_payload(tensor, folder, files))
        kept.append(copy)
    return kept


def _save(model: onnx.ModelProto, nodes: list, initializers: list, path: Path) -> Path:
    """Save ``model`` with these nodes and initializers (and the com.microsoft opset) at ``path``."""
    graph = model.graph
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    if not any(o.domain == fmt.MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(fmt.MS_DOMAIN, 1))
    onnx.save(model, str(path))
    return path


def _float_weight(node: onnx.NodeProto, inits: dict, layout: QuantLayout):
    """(weight, transposed, bias name or "") when ``node`` multiplies by a constant float32 2-D
    weight that ``layout`` quantizes: a MatMul's [K, N] weight, or a plain ``Gemm``'s (alpha 1,
    beta 1, A not transposed, B transposed: torch's Linear) [N, K] weight and its bias; else None."""
    if node.domain or node.name.endswith(layout.keep_float) or len(node.input) < 2:
        return None
    weight = inits.get(node.input[1])
    if weight is None or weight.data_type != onnx.TensorProto.FLOAT or len(weight.dims) != 2:
        return None
    if node.op_type == "MatMul":
        return weight, False, ""
    if node.op_type != "Gemm":
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("transA", 0) or not attrs.get("transB", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
        return None
    bias = node.input[2] if len(node.input) > 2 else ""
    if bias and (bias not in inits or len(inits[bias].dims) != 1):
        return None
    return weight, True, bias


def quantize_weights(src_model: Path, dst_model: Path, layout: QuantLayout | None = None) -> Path:
    """Write ``dst_model`` (+ ``<name>.data``): ``src_model`` with every MatMul on a constant
    float32 [K, N] weight, and every Linear-style Gemm (``_float_weight``; its bias carried over),
    replaced by a ``MatMulNBits`` as ``layout`` says, except the nodes whose names end with one
    of ``layout.keep_float``. ``QMoE`` nodes (experts og's builder
    quantized) get the layout's ``accuracy_level``."""
    layout = layout or QuantLayout()
    src_model, dst_model = Path(src_model), Path(dst_model)
    dst_model.parent.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(src_model), load_external_data=False)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    files: dict = {}
    writer = DataWriter(dst_model.with_name(dst_model.name + ".data"))
    kept: list[onnx.TensorProto] = []
    quantized: set[str] = set()
    new_nodes = []
    accuracy_level = layout.accuracy_level
    try:
        for node in graph.node:
            if node.op_type == fmt.QMOE and accuracy_level:
                set_int_attribute(node, fmt.ACCURACY_LEVEL, accuracy_level)
            found = _float_weight(node, inits, layout)
            if found is None:
                new_nodes.append(node)
                continue
            weight, transposed, bias = found
            rows, cols = weight.dims
            w = np.frombuffer(read_payload(weight, src_model.parent, files), dtype=np.float32).reshape(rows, cols)
            n, k = (rows, cols) if transposed else (cols, rows)
            bits = layout.bits(node.name)
            tensors = _quantized_tensors(weight.name, bits, *quantize_rows(w if transposed else w.T, bits, layout))
            del w
            for tensor, payload in tensors:
                writer.write(tensor, payload)
                kept.append(tensor)
            attrs = dict(K=k, N=n, bits=bits, block_size=layout.block_size)
            if accuracy_level:
                attrs[fmt.ACCURACY_LEVEL] = accuracy_level
            inputs = [node.input[0]] + [tensor.name for tensor, _ in tensors]
            if bias:  # MatMulNBits' inputs: A, B, scales, zero_points, g_idx, bias
                inputs += [""] * (5 - len(inputs)) + [bias]
            new_nodes.append(
                helper.make_node(
                    fmt.MATMUL_NBITS, inputs, list(node.output), name=node.name + fmt.quant_suffix(bits), domain=fmt.MS_DOMAIN, **attrs
                )
            )
            quantized.add(weight.name)
        still_used = {name for n in new_nodes for name in n.input}
        kept += _copy_initializers(graph, quantized - still_used, writer, src_model.parent, files)
    finally:
        writer.close()
        for handle in files.values():
            handle.close()
    return _save(model, new_nodes, kept, dst_model)


def quantize_in_place(model_path: Path, layout: QuantLayout) -> Path:
    """``quantize_weights`` over a graph and its ``<name>.data``, replacing both."""
    model_path = Path(model_path)
    staged = model_path.parent / f".{model_path.stem}-quantized" / model_path.name
    try:
        quantize_weights(model_path, staged, layout)
        data = model_path.with_name(model_path.name + ".data")
        staged.with_name(data.name).replace(data)
        staged.replace(model_path)
    finally:
        shutil.rmtree(staged.parent, ignore_errors=True)
    return model_path


def quantize_embedding_table(model_path: Path, bits: int, layout: QuantLayout) -> Path:
    """Rewrite a graph whose token table is a constant float32 [V, H] ``Gather`` input (the
    embedding graph) so that the table is stored block-quantized along H, ``bits`` per value
    with ``layout``'s block size and symmetry, and looked up by onnxruntime's
    ``GatherBlockQuantized`` (com.microsoft), which dequantizes just the gathered rows. The
    table's rows are quantized exactly as an LM head over the same matrix is (blocks along H),
    so a tied checkpoint's embedding and LM head dequantize alike."""
    model_path = Path(model_path)
    model = onnx.load(str(model_path), load_external_data=False)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    gathers = [
        n
        for n in graph.node
        if n.op_type == "Gather"
        and n.input[0] in inits
        and len(inits[n.input[0]].dims) == 2
        and inits[n.input[0]].data_type == onnx.TensorProto.FLOAT
    ]
    if len(gathers) != 1:
        raise ValueError(f"{model_path}: expected one Gather on a float32 [V, H] table, found {len(gathers)}")
    gather = gathers[0]
    table = fmt.read_initializers(model, model_path.parent, [gather.input[0]])[gather.input[0]]
    vocab, hidden = table.shape
    data, scales, zeros = quantize_rows(table, bits, layout)
    del table
    name = gather.input[0]
    # the table's rows as GatherBlockQuantized reads them: [V, H*bits/8], no padding past H
    data = np.ascontiguousarray(data.reshape(vocab, -1)[:, : hidden * bits // 8])
    tensors = _quantized_tensors(name, bits, data, scales, zeros)
    data_name = model_path.name + ".data"
    staged = model_path.with_name(data_name + ".quantized")
    writer = DataWriter(staged)
    files: dict = {}
    kept = []
    try:
        for tensor, payload in tensors:
            writer.write(tensor, payload)
            kept.append(tensor)
        kept += _copy_initializers(graph, {name}, writer, model_path.parent, files)
    finally:
        writer.close()
        for handle in files.values():
            handle.close()
    for tensor in kept:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = data_name
    lookup = helper.make_node(
        fmt.GATHER_BLOCK_QUANTIZED,
        [tensors[0][0].name, gather.input[1]] + [t.name for t, _ in tensors[1:]],
        list(gather.output),
        name=gather.name + fmt.quant_suffix(bits),
        domain=fmt.MS_DOMAIN,
        bits=bits,
        block_size=layout.block_size,
        gather_axis=0,
        quantize_axis=1,
    )
    staged.replace(model_path.with_name(data_name))
    return _save(model, [lookup if n is gather else n for n in graph.node], kept, model_path)
