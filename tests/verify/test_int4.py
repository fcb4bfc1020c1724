"""-p int4 -e cpu: og's MatMulNBits decoder with DeepStack intact.

Correctness of the quantized graph: with accuracy_level=1 (fp32 activations) it must equal
transformers run on the int4 weights dequantized, to fp32 tolerance. What int4 itself costs
against fp32 (at og's default accuracy_level 4) is a property of the weights, not a correctness
check: benchmarks/run.py measures it on a real-width checkpoint."""

import onnx
import pytest

from genai_qwen3vl.model import io_contract
from genai_qwen3vl.verify.artifacts import decoder_parity, embedding_parity, vision_parity
from genai_qwen3vl.verify.compare import assert_within
from genai_qwen3vl.verify.reference import dequantized_reference

from ..conftest import ALL_PRESETS
from ..helpers import SHORT_CASES, check_generation_case, targets

INT4 = targets("int4/cpu")
EXACT = ("--int4_accuracy_level", "1")


@pytest.fixture(scope="module")
def dequantized(exported, reference):
    cache = {}

    def get(preset):
        if preset not in cache:
            cache[preset] = dequantized_reference(reference(preset), exported(preset, "-p", "int4", "-e", "cpu", *EXACT))
        return cache[preset]

    return get


@pytest.mark.parity(artifact="decoder")
@pytest.mark.parametrize("target", INT4)
@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_int4_decoder_equals_transformers_on_dequantized_weights(preset, target, exported, dequantized, record_parity):
    report = decoder_parity(exported(preset, *target.flags, *EXACT), dequantized(preset), seed=5, prompt_len=12, decode_steps=3)
    record_parity(report)
    assert_within(report, target.tolerance.decoder, f"int4 decoder ({preset})")


@pytest.mark.parity(artifact="vision")
@pytest.mark.parity(artifact="embedding")
@pytest.mark.parametrize("target", INT4)
@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_int4_export_keeps_vision_and_embedding_fp32(preset, target, exported, reference, record_parity):
    out = exported(preset, *target.flags)
    vision = vision_parity(out, reference(preset), [[1, 4, 6], [2, 2, 4]])
    embedding = embedding_parity(out, reference(preset))
    record_parity({**vision, **embedding})
    assert_within(vision, target.tolerance.vision, f"int4 export's vision ({preset})")
    assert_within(embedding, target.tolerance.embedding, f"int4 export's embedding ({preset})")
    for name in ("vision.onnx", "embedding.onnx"):
        types = {i.data_type for i in onnx.load(str(out / name), load_external_data=False).graph.initializer}
        assert onnx.TensorProto.FLOAT16 not in types and onnx.TensorProto.BFLOAT16 not in types


def test_int4_graph_is_og_int4_with_deepstack(exported, reference):
    spec = reference("tied").spec
    model = onnx.load(str(exported("tied", "-p", "int4", "-e", "cpu") / io_contract.DECODER.filename), load_external_data=False)
    ops = [n.op_type for n in model.graph.node]
    assert "MatMul" not in ops and ops.count("MatMulNBits") == 7 * spec.text.num_hidden_layers + 1
    levels = {a.i for n in model.graph.node if n.op_type == "MatMulNBits" for a in n.attribute if a.name == "accuracy_level"}
    assert levels == {4}  # og's CPU default
    adds = [n.name for n in model.graph.node if n.name.endswith("/deepstack/Add")]
    assert adds == [f"/model/layers.{k}/deepstack/Add" for k in range(spec.num_deepstack)]


def test_int4_block_size_flag(exported):
    out = exported("awkward", "-p", "int4", "-e", "cpu", "--int4_block_size", "16")
    model = onnx.load(str(out / "model.onnx"), load_external_data=False)
    sizes = {a.i for n in model.graph.node if n.op_type == "MatMulNBits" for a in n.attribute if a.name == "block_size"}
    assert sizes == {16}


@pytest.mark.parity(artifact="end_to_end")
@pytest.mark.parametrize("target", INT4)
@pytest.mark.parametrize("preset", ALL_PRESETS)
@pytest.mark.parametrize("case", list(SHORT_CASES))
def test_int4_through_og_equals_transformers_on_dequantized_weights(preset, case, target, exported, dequantized, record_parity):
    out = exported(preset, *target.flags, *EXACT)
    check_generation_case(out, dequantized(preset), case, target.tolerance, record_parity, f"int4 {preset}/{case}")
