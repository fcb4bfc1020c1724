"""--vision_quant (-e cpu): the vision tower's Linear weights as 8- or 4-bit MatMulNBits blocks.

Correctness, as for the int4 decoder: at accuracy_level 1 the quantized vision graph must equal
transformers' vision tower run on the dequantized weights, to fp32 tolerance, and so must og's
generation with an image. What the bits cost against fp32 is measured on a real-width tower in
docs/quantization.md, not asserted here."""

import numpy as np
import onnx
import pytest

from genai_qwen3vl.model.precisions import FP32, VISION_QUANT
from genai_qwen3vl.verify.artifacts import vision_parity
from genai_qwen3vl.verify.compare import assert_within
from genai_qwen3vl.verify.reference import dequantized_reference, quantized_vision_weights
from genai_qwen3vl.verify.validate import checkable_variant, exported_target

from ..helpers import check_generation_case

# (preset, precision, --vision_quant): both bit widths, on a quantized and on an fp32 decoder
CASES = [("awkward", "int4", "int8"), ("tied", "fp32", "int4")]


@pytest.fixture(scope="module")
def quantized(exported, reference, tmp_path_factory):
    """(the export, its accuracy_level-1 variant, transformers on its dequantized weights)."""
    cache = {}

    def get(preset, precision, bits):
        key = (preset, precision, bits)
        if key not in cache:
            out = exported(preset, "-p", precision, "-e", "cpu", "--vision_quant", bits)
            work = tmp_path_factory.mktemp(f"vq-{preset}-{bits}")
            cache[key] = out, checkable_variant(out, exported_target(out), work), dequantized_reference(reference(preset), out)
        return cache[key]

    return get


@pytest.mark.parametrize("preset, precision, bits", CASES)
def test_every_vision_linear_becomes_matmulnbits(preset, precision, bits, quantized, reference):
    out, _, _ = quantized(preset, precision, bits)
    model = onnx.load(str(out / "vision.onnx"), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    spec = reference(preset).spec
    # per block qkv, proj, fc1, fc2; two Linears in the merger and in each DeepStack merger
    assert len(nodes) == 4 * spec.vision.depth + 2 * (1 + spec.num_deepstack)
    attrs = [{a.name: a.i for a in n.attribute} for n in nodes]
    layout = VISION_QUANT[bits]
    assert {(a["bits"], a["block_size"], a["accuracy_level"]) for a in attrs} == {
        (layout.default_bits, layout.block_size, layout.accuracy_level)
    }
    assert all(len(n.input) == 6 and n.input[5] in inits for n in nodes), "each Linear's bias is carried over"
    left = [n.name for n in model.graph.node if n.op_type in ("Gemm", "MatMul") and len(n.input) > 1 and n.input[1] in inits]
    assert not left, f"Linear weights left in float: {left}"


@pytest.mark.parametrize("preset, precision, bits", CASES)
def test_dequantized_vision_weights_are_the_checkpoints_within_the_bits(preset, precision, bits, quantized, reference):
    """Every quantized weight lands on its own transformers parameter, within the rounding its
    bits allow (a transposed or misnamed weight would be far off)."""
    out, _, _ = quantized(preset, precision, bits)
    weights = quantized_vision_weights(out)
    params = dict(reference(preset).model.named_parameters())
    spec = reference(preset).spec
    assert len(weights) == 4 * spec.vision.depth + 2 * (1 + spec.num_deepstack)
    bound = {8: 0.01, 4: 0.2}[VISION_QUANT[bits].default_bits]
    for name, w in weights.items():
        ref = params[name].detach().numpy()
        assert w.shape == ref.shape, name
        assert np.sqrt(((w - ref) ** 2).mean() / (ref**2).mean()) < bound, name


@pytest.mark.parity(artifact="vision")
@pytest.mark.parametrize("preset, precision, bits", CASES)
def test_quantized_vision_equals_transformers_on_dequantized_weights(preset, precision, bits, quantized, record_parity):
    _, exact, ref = quantized(preset, precision, bits)
    report = vision_parity(exact, ref, [[1, 4, 6], [2, 2, 4]])
    record_parity(report)
    assert_within(report, FP32.vision, f"{bits} vision ({preset})")


@pytest.mark.parity(artifact="end_to_end")
@pytest.mark.parametrize("preset, precision, bits", CASES)
def test_quantized_vision_through_og_equals_transformers(preset, precision, bits, quantized, record_parity):
    _, exact, ref = quantized(preset, precision, bits)
    check_generation_case(exact, ref, "one_image", FP32, record_parity, f"{bits} vision {precision} {preset}/one_image")
