"""The streaming int4 quantizer writes exactly what og's own int4 builder writes."""

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from genai_qwen3vl.export.og_builder import run_og_builder, text_only_view
from genai_qwen3vl.export.quantize import quantize_weights
from genai_qwen3vl.model.precisions import QuantLayout


def _nodes(model):
    return [
        (
            n.op_type,
            n.domain,
            n.name,
            list(n.input),
            list(n.output),
            sorted((a.name, onnx.helper.get_attribute_value(a)) for a in n.attribute),
        )
        for n in model.graph.node
    ]


@pytest.mark.parametrize("preset,block_size,accuracy_level", [("awkward", 32, 4), ("tied", 16, 1), ("deep", 128, 0)])
def test_streaming_int4_equals_og_int4(preset, block_size, accuracy_level, checkpoints, tmp_path):
    view = text_only_view(checkpoints(preset), tmp_path / "view")
    fp32 = run_og_builder(view, tmp_path / "fp32", "fp32", "cpu", {})
    options = {"block_size": str(block_size), "accuracy_level": str(accuracy_level)}
    theirs = onnx.load(str(run_og_builder(view, tmp_path / "og_int4", "int4", "cpu", options) / "model.onnx"))
    ours = onnx.load(str(quantize_weights(fp32 / "model.onnx", tmp_path / "ours" / "model.onnx", QuantLayout(block_size, accuracy_level))))
    assert _nodes(ours) == _nodes(theirs)
    a = {t.name: numpy_helper.to_array(t) for t in ours.graph.initializer}
    b = {t.name: numpy_helper.to_array(t) for t in theirs.graph.initializer}
    assert set(a) == set(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape and np.array_equal(a[name], b[name]), name
    assert {(o.domain, o.version) for o in ours.opset_import} == {(o.domain, o.version) for o in theirs.opset_import}


def test_text_only_view_keeps_text_config(checkpoints, tmp_path):
    import json

    ckpt = checkpoints("tied")
    view = text_only_view(ckpt, tmp_path)
    a, b = (json.loads((p / "config.json").read_text()) for p in (ckpt, view))
    assert a["text_config"] == b["text_config"] and b["vision_config"]["depth"] == 0
    assert sorted(p.name for p in ckpt.iterdir()) == sorted(p.name for p in view.iterdir())


# --------------------------------------------------------------------------- layouts
# K = 200 is no multiple of any block size: the last block is padded
_K, _N = 200, 72
LAYOUTS = {
    "rtn-b32": QuantLayout(32, 1),
    "asym-b64": QuantLayout(64, 1, symmetric=False),
    "asym-b16": QuantLayout(16, 1, symmetric=False),
    "8bit-down-b32": QuantLayout(32, 1, eight_bit=("down_proj",)),
    "8bit-down-asym-b128": QuantLayout(128, 1, symmetric=False, eight_bit=("down_proj",)),
}


def _one_matmul(folder, name, w):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name=name)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, w.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, w.shape[1]])],
        [numpy_helper.from_array(w, "W")],
    )
    path = folder / "m.onnx"
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
        str(path),
        save_as_external_data=True,
        location="m.onnx.data",
        size_threshold=0,
    )
    return path


@pytest.mark.parametrize("name", list(LAYOUTS))
@pytest.mark.parametrize("node", ["/model/layers.0/mlp/down_proj/MatMul", "/model/layers.0/attn/q_proj/MatMul"])
def test_matmulnbits_computes_the_dequantized_weights(name, node, tmp_path):
    """onnxruntime's MatMulNBits (accuracy_level 1) on what the quantizer wrote equals x @ W
    dequantized by the reference's own reading of the bytes; the bits are the layout's and the
    weights are within that many bits' error of the original."""
    import onnxruntime as ort

    from genai_qwen3vl.verify.reference import matmulnbits_weights

    layout = LAYOUTS[name]
    rng = np.random.default_rng(3)
    w = rng.standard_normal((_K, _N)).astype(np.float32)
    out = quantize_weights(_one_matmul(tmp_path, node, w), tmp_path / "q" / "m.onnx", layout)
    model = onnx.load(str(out), load_external_data=False)
    [op] = model.graph.node
    bits = {a.name: a.i for a in op.attribute}["bits"]
    assert (op.op_type, bits) == ("MatMulNBits", layout.bits(node))
    assert (len(op.input) == 4) == (not layout.symmetric)
    x = rng.standard_normal((3, _K)).astype(np.float32)
    y = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    deq = matmulnbits_weights(out)["W"]
    assert np.abs(y - x @ deq).max() <= 1e-4 * np.abs(y).max()
    error = np.linalg.norm(deq - w) / np.linalg.norm(w)
    assert error < (0.11 if bits == 4 else 0.01), error


@pytest.mark.parametrize("bits,block,symmetric", [(4, 32, True), (4, 16, False), (8, 32, True), (8, 32, False)])
def test_embedding_table_lookup_is_the_dequantized_table(bits, block, symmetric, tmp_path):
    """GatherBlockQuantized on the rewritten graph returns the dequantized table's rows; H = 48
    leaves a partial last block at block 32."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from genai_qwen3vl.export.quantize import quantize_embedding_table
    from genai_qwen3vl.verify.reference import embedding_table

    table = np.random.default_rng(5).standard_normal((50, 48)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["rows"], name="/embed/Gather")],
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, "s"])],
        [helper.make_tensor_value_info("rows", TensorProto.FLOAT, [1, "s", 48])],
        [numpy_helper.from_array(table, "table")],
    )
    path = tmp_path / "embedding.onnx"
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]),
        str(path),
        save_as_external_data=True,
        location="embedding.onnx.data",
        size_threshold=0,
    )
    quantize_embedding_table(path, bits, QuantLayout(block, symmetric=symmetric))
    model = onnx.load(str(path), load_external_data=False)
    assert [n.op_type for n in model.graph.node] == ["GatherBlockQuantized"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["embedding.onnx", "embedding.onnx.data"]
    ids = np.array([[0, 7, 49, 7, 12]], dtype=np.int64)
    rows = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"ids": ids})[0]
    deq = embedding_table(path)
    assert np.array_equal(rows, deq[ids])
    error = np.linalg.norm(deq - table) / np.linalg.norm(table)
    assert error < (0.11 if bits == 4 else 0.01), error
