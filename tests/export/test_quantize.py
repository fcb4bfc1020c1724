"""The streaming int4 quantizer writes exactly what og's own int4 builder writes."""

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from genai_qwen3vl.export.og_builder import run_og_builder, text_only_view
from genai_qwen3vl.export.quantize import quantize_int4


def _nodes(model):
    return [
        (n.op_type, n.domain, n.name, list(n.input), list(n.output),
         sorted((a.name, onnx.helper.get_attribute_value(a)) for a in n.attribute))
        for n in model.graph.node
    ]


@pytest.mark.parametrize("preset,block_size,accuracy_level", [("awkward", 32, 4), ("tied", 16, 1), ("deep", 128, 0)])
def test_streaming_int4_equals_og_int4(preset, block_size, accuracy_level, checkpoints, tmp_path):
    view = text_only_view(checkpoints(preset), tmp_path / "view")
    fp32 = run_og_builder(view, tmp_path / "fp32", "fp32", "cpu", {})
    options = {"block_size": str(block_size), "accuracy_level": str(accuracy_level)}
    theirs = onnx.load(str(run_og_builder(view, tmp_path / "og_int4", "int4", "cpu", options) / "model.onnx"))
    ours = onnx.load(str(quantize_int4(fp32 / "model.onnx", tmp_path / "ours" / "model.onnx", block_size, accuracy_level)))
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
