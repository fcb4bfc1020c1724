"""genai_qwen3vl.onnx_format: the block codec both ways (against onnxruntime's own MatMulNBits and
GatherBlockQuantized kernels), external data written and read back, attributes. Small synthetic
arrays and graphs only: no checkpoint, no export."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper

from genai_qwen3vl import onnx_format as fmt

BLOCKS = st.sampled_from([16, 32, 64])


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _model(node: onnx.NodeProto, inputs, outputs, initializers) -> onnx.ModelProto:
    graph = helper.make_graph([node], "g", inputs, outputs, initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid(fmt.MS_DOMAIN, 1)])


@settings(max_examples=40, deadline=None)
@given(bits=st.sampled_from([4, 8]), shape=st.tuples(st.integers(1, 5), st.integers(1, 9)), seed=st.integers(0, 2**16))
def test_pack_then_unpack_gives_the_values_back(bits, shape, seed):
    q = np.random.default_rng(seed).integers(0, 2**bits, size=(*shape, 2 * shape[1]), dtype=np.uint8)
    packed = fmt.pack_bits(q, bits)
    assert packed.shape[-1] == q.shape[-1] * bits // 8
    np.testing.assert_array_equal(fmt.unpack_bits(packed, bits), q)


@settings(max_examples=30, deadline=None)
@given(
    bits=st.sampled_from([4, 8]),
    block=BLOCKS,
    n=st.integers(1, 7),
    k=st.integers(1, 150),
    symmetric=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_quantize_then_dequantize_is_within_a_step_of_each_block(bits, block, n, k, symmetric, seed):
    """Odd K (padded to whole blocks), both symmetries: each value comes back within one
    quantization step (the block's scale) and the padding is cut off."""
    w = np.random.default_rng(seed).normal(0, 1, (n, k)).astype(np.float32)
    q, scales, zeros = fmt.quantize_blocks(w, bits, block, symmetric)
    blocks = -(-k // block)
    assert q.shape == (n, blocks, block) and scales.shape == (n, blocks)
    assert (zeros is None) == symmetric
    packed_zeros = None if zeros is None else fmt.pack_zero_points(zeros, bits)
    back = fmt.dequantize_blocks(fmt.pack_bits(q, bits), scales, block, k, bits, packed_zeros)
    assert back.shape == (n, k) and back.dtype == np.float32
    step = np.repeat(np.abs(scales), block, axis=-1)[:, :k]
    assert np.all(np.abs(back - w) <= step * (1 + 1e-5) + 1e-7)


@settings(max_examples=25, deadline=None)
@given(
    bits=st.sampled_from([4, 8]),
    block=BLOCKS,
    n=st.integers(1, 6),
    k=st.integers(1, 130),
    zero_points=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_the_codec_is_what_onnxruntimes_matmulnbits_computes(bits, block, n, k, zero_points, seed):
    """Random codes, scales and zero points (odd block counts: 4-bit zero points padded) packed by
    ``pack_bits`` / ``pack_zero_points``: onnxruntime's MatMulNBits multiplies by exactly the
    weights ``dequantize_blocks`` decodes."""
    rng = np.random.default_rng(seed)
    blocks = -(-k // block)
    q = rng.integers(0, 2**bits, size=(n, blocks, block), dtype=np.uint8)
    scales = rng.uniform(0.01, 0.1, (n, blocks)).astype(np.float32)
    zeros = rng.integers(0, 2**bits, size=(n, blocks), dtype=np.uint8) if zero_points else None
    data = fmt.pack_bits(q, bits)
    packed_zeros = None if zeros is None else fmt.pack_zero_points(zeros, bits)
    inits = [
        onnx.numpy_helper.from_array(data, "W" + fmt.quant_suffix(bits)),
        onnx.numpy_helper.from_array(scales, "W_scales"),
    ] + ([] if packed_zeros is None else [onnx.numpy_helper.from_array(packed_zeros, "W_zero_points")])
    node = helper.make_node(
        fmt.MATMUL_NBITS, ["x"] + [t.name for t in inits], ["y"], domain=fmt.MS_DOMAIN, K=k, N=n, bits=bits, block_size=block
    )
    x = rng.normal(0, 1, (3, k)).astype(np.float32)
    model = _model(
        node,
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [3, k])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [3, n])],
        inits,
    )
    (y,) = _session(model).run(None, {"x": x})
    w = fmt.dequantize_blocks(data, scales, block, k, bits, packed_zeros)  # [N, K]
    zero = np.full((n, blocks), 2 ** (bits - 1)) if zeros is None else zeros
    expected = (q.reshape(n, -1) - np.repeat(zero, block, axis=-1).astype(np.float32)) * np.repeat(scales, block, axis=-1)
    expected = expected[:, :k]
    np.testing.assert_array_equal(w, expected.astype(np.float32))
    np.testing.assert_allclose(y, x @ w.T, rtol=1e-5, atol=1e-5)
    assert fmt.float_name(model.graph.node[0].input[1]) == "W"


@pytest.mark.parametrize("bits", [4, 8])
def test_gather_block_quantized_reads_the_table_the_codec_writes(bits):
    """A token table quantized along H (odd width: the last block padded, the rows cut at H) and
    looked up by onnxruntime's GatherBlockQuantized gives the rows ``dequantize_blocks`` decodes."""
    vocab, hidden, block = 11, 40, 16
    table = np.random.default_rng(bits).normal(0, 1, (vocab, hidden)).astype(np.float32)
    q, scales, _ = fmt.quantize_blocks(table, bits, block, symmetric=True)
    data = np.ascontiguousarray(fmt.pack_bits(q, bits).reshape(vocab, -1)[:, : hidden * bits // 8])
    inits = [onnx.numpy_helper.from_array(data, "T"), onnx.numpy_helper.from_array(scales, "T_scales")]
    node = helper.make_node(
        fmt.GATHER_BLOCK_QUANTIZED,
        ["T", "ids", "T_scales"],
        ["rows"],
        domain=fmt.MS_DOMAIN,
        bits=bits,
        block_size=block,
        gather_axis=0,
        quantize_axis=1,
    )
    model = _model(
        node,
        [helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, [4])],
        [helper.make_tensor_value_info("rows", onnx.TensorProto.FLOAT, [4, hidden])],
        inits,
    )
    ids = np.array([0, 10, 3, 3], dtype=np.int64)
    (rows,) = _session(model).run(None, {"ids": ids})
    decoded = fmt.dequantize_blocks(data, scales, block, hidden, bits)
    np.testing.assert_allclose(rows, decoded[ids], rtol=0, atol=1e-6)


@settings(max_examples=15, deadline=None)
@given(shapes=st.lists(st.tuples(st.integers(1, 9), st.integers(1, 9)), min_size=1, max_size=5), seed=st.integers(0, 2**16))
def test_external_data_written_is_read_back(tmp_path_factory, shapes, seed):
    """Tensors appended with DataWriter (each at an aligned offset) and one kept inline are read
    back by read_initializers from a graph loaded without its external data."""
    folder = tmp_path_factory.mktemp("external")
    rng = np.random.default_rng(seed)
    arrays = {f"t{i}": rng.normal(0, 1, shape).astype(np.float32) for i, shape in enumerate(shapes)}
    arrays["codes"] = rng.integers(0, 255, (3, 5), dtype=np.uint8)
    writer = fmt.DataWriter(folder / "g.onnx.data")
    tensors = []
    try:
        for name, array in arrays.items():
            tensor = fmt.new_tensor(name, onnx.helper.np_dtype_to_tensor_dtype(array.dtype), array.shape)
            writer.write(tensor, np.ascontiguousarray(array))
            assert int(fmt.external_info(tensor)["offset"]) % fmt.ALIGN == 0
            tensors.append(tensor)
    finally:
        writer.close()
    inline = onnx.numpy_helper.from_array(np.arange(6, dtype=np.int64).reshape(2, 3), "inline")
    graph = helper.make_graph([], "g", [], [helper.make_tensor_value_info("inline", onnx.TensorProto.INT64, [2, 3])], tensors + [inline])
    onnx.save(helper.make_model(graph), str(folder / "g.onnx"))
    model = onnx.load(str(folder / "g.onnx"), load_external_data=False)
    read = fmt.read_initializers(model, folder, [*arrays, "inline"])
    for name, array in arrays.items():
        np.testing.assert_array_equal(read[name], array)
        assert read[name].dtype == array.dtype
    np.testing.assert_array_equal(read["inline"], np.arange(6).reshape(2, 3))


def test_a_truncated_external_file_is_named(tmp_path):
    writer = fmt.DataWriter(tmp_path / "g.onnx.data")
    tensor = fmt.new_tensor("w", onnx.TensorProto.FLOAT, [4, 4])
    writer.write(tensor, np.ones((4, 4), dtype=np.float32))
    writer.close()
    (tmp_path / "g.onnx.data").write_bytes(b"\0" * 10)
    model = helper.make_model(helper.make_graph([], "g", [], [], [tensor]))
    with pytest.raises(ValueError, match="g.onnx.data is shorter than its initializer w needs"):
        fmt.read_initializers(model, tmp_path, ["w"])


def test_int_attributes_are_set_or_added():
    node = helper.make_node(fmt.QMOE, ["x"], ["y"], domain=fmt.MS_DOMAIN, k=2, activation_type="swiglu")
    fmt.set_int_attribute(node, "k", 4)
    fmt.set_int_attribute(node, fmt.ACCURACY_LEVEL, 1)
    assert fmt.int_attributes(node) == {"k": 4, "accuracy_level": 1}
    assert fmt.ONNX_TO_NAME[onnx.TensorProto.BFLOAT16] == "bfloat16"
    assert fmt.numpy_dtype(onnx.TensorProto.UINT8) == np.uint8


@pytest.mark.parametrize("bits", [2, 3])
def test_other_widths_are_refused(bits):
    with pytest.raises(ValueError, match=f"{bits}-bit"):
        fmt.pack_bits(np.zeros((1, 4), dtype=np.uint8), bits)
    with pytest.raises(ValueError, match=f"{bits}-bit"):
        fmt.dequantize_blocks(np.zeros((1, 4), dtype=np.uint8), np.ones((1, 1), dtype=np.float32), 4, 4, bits)
