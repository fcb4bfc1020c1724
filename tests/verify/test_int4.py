"""-p int4 -e cpu: og's MatMulNBits decoder with DeepStack intact.

Correctness of the quantized graph: with accuracy_level=1 (fp32 activations) it must equal
transformers run on the int4 weights dequantized, to fp32 tolerance. What int4 itself costs
against fp32 (at og's default accuracy_level 4) is a property of the weights, not a correctness
check: benchmarks/run.py measures it on a real-width checkpoint."""

import numpy as np
import onnx
import pytest

from genai_qwen3vl.model import io_contract
from genai_qwen3vl.verify.artifacts import decoder_parity, embedding_parity, vision_parity
from genai_qwen3vl.verify.compare import assert_within
from genai_qwen3vl.verify.reference import EMBED_TOKENS, dequantized_reference, quantized_text_weights

from ..conftest import ALL_PRESETS
from ..helpers import SHORT_CASES, check_generation_case, targets

INT4 = targets("int4/cpu")
EXACT = ("--int4_accuracy_level", "1")
MIXED = ("--int4_recipe", "mixed", *EXACT)


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
def test_int4_export_keeps_vision_fp32_and_quantizes_the_table(preset, target, exported, reference, dequantized, record_parity):
    """The vision graph stays fp32 (transformers' own weights); the embedding graph looks up the
    8-bit table, equal to transformers' embedding on the dequantized table."""
    out = exported(preset, *target.flags, *EXACT)
    vision = vision_parity(out, reference(preset), [[1, 4, 6], [2, 2, 4]])
    embedding = embedding_parity(out, dequantized(preset))
    record_parity({**vision, **embedding})
    assert_within(vision, target.tolerance.vision, f"int4 export's vision ({preset})")
    assert_within(embedding, target.tolerance.embedding, f"int4 export's embedding ({preset})")
    types = {i.data_type for i in onnx.load(str(out / "vision.onnx"), load_external_data=False).graph.initializer}
    assert onnx.TensorProto.FLOAT16 not in types and onnx.TensorProto.BFLOAT16 not in types
    table = onnx.load(str(out / "embedding.onnx"), load_external_data=False)
    [lookup] = [n for n in table.graph.node if n.op_type == "GatherBlockQuantized"]
    assert {a.name: a.i for a in lookup.attribute}["bits"] == 8
    spec = reference(preset).spec
    full = [
        t.name
        for t in table.graph.initializer
        if list(t.dims) == [spec.text.vocab_size, spec.text.hidden_size] and t.data_type == onnx.TensorProto.FLOAT
    ]
    assert not full, f"a float table is left in embedding.onnx: {full}"


def test_tied_table_and_lm_head_dequantize_alike(exported):
    """A tied checkpoint's one matrix, quantized once as the 8-bit LM head of the mixed recipe
    and once as the table, gives the same weights in both places."""
    weights = quantized_text_weights(exported("tied", "-p", "int4", "-e", "cpu", *MIXED))
    assert np.array_equal(weights["lm_head.weight"], weights[EMBED_TOKENS])


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


def test_int4_recipe_mixed_puts_8_bits_where_it_says(exported, reference):
    out = exported("awkward", "-p", "int4", "-e", "cpu", *MIXED)
    model = onnx.load(str(out / "model.onnx"), load_external_data=False)
    bits = {n.name: {a.name: a.i for a in n.attribute}["bits"] for n in model.graph.node if n.op_type == "MatMulNBits"}
    eight = sorted(name for name, b in bits.items() if b == 8)
    layers = reference("awkward").spec.text.num_hidden_layers
    expected = [f"/model/layers.{i}/{part}_Q8" for i in range(layers) for part in ("attn/v_proj/MatMul", "mlp/down_proj/MatMul")]
    assert eight == sorted(expected + ["/lm_head/MatMul_Q8"])
    assert set(bits.values()) == {4, 8}
    table = onnx.load(str(out / "embedding.onnx"), load_external_data=False)
    [lookup] = [n for n in table.graph.node if n.op_type == "GatherBlockQuantized"]
    assert {a.name: a.i for a in lookup.attribute}["bits"] == 8


@pytest.mark.parity(artifact="decoder")
@pytest.mark.parity(artifact="end_to_end")
@pytest.mark.parametrize("target", INT4)
@pytest.mark.parametrize("preset", ["awkward", "tied"])
def test_int4_recipe_mixed_equals_transformers_on_dequantized_weights(preset, target, exported, reference, record_parity):
    out = exported(preset, *target.flags, *MIXED)
    ref = dequantized_reference(reference(preset), out)
    report = decoder_parity(out, ref, seed=5, prompt_len=12, decode_steps=3)
    record_parity(report)
    assert_within(report, target.tolerance.decoder, f"int4 mixed decoder ({preset})")
    assert_within(embedding_parity(out, ref), target.tolerance.embedding, f"int4 mixed embedding ({preset})")
    check_generation_case(out, ref, "one_image", target.tolerance, record_parity, f"int4 mixed {preset}/one_image")
