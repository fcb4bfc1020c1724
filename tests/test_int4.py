"""-p int4 -e cpu: og's MatMulNBits decoder with DeepStack intact.

Correctness of the quantized graph: with accuracy_level=1 (fp32 activations) it must equal
transformers run on the int4 weights dequantized, to fp32 tolerance. The cost of int4 itself
(default accuracy_level 4 vs the fp32 model) is measured and recorded, not asserted."""

import numpy as np
import onnx
import pytest
from PIL import Image

from genai_qwen3vl import io_contract
from genai_qwen3vl.parity import (
    assert_within,
    compare_generations,
    decoder_parity,
    dequantized_reference,
    embedding_parity,
    hf_generate,
    og_generate,
    vision_parity,
)
from genai_qwen3vl.tiny import make_picture
from genai_qwen3vl.tolerances import tolerance

from .conftest import ALL_PRESETS, SHORT_CASES, check_generation_case

EXACT_INT4 = ("-p", "int4", "-e", "cpu", "--int4_accuracy_level", "1")
DEFAULT_INT4 = ("-p", "int4", "-e", "cpu")


@pytest.fixture(scope="module")
def dequantized(exported, reference):
    cache = {}

    def get(preset):
        if preset not in cache:
            cache[preset] = dequantized_reference(reference(preset), exported(preset, *EXACT_INT4))
        return cache[preset]

    return get


@pytest.mark.parity(artifact="decoder")
@pytest.mark.parametrize("precision", ["int4"])
@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_int4_decoder_equals_transformers_on_dequantized_weights(preset, precision, exported, dequantized, record_parity):
    report = decoder_parity(exported(preset, *EXACT_INT4), dequantized(preset), seed=5, prompt_len=12, decode_steps=3)
    record_parity(report)
    assert_within(report, tolerance(precision).decoder, f"int4 decoder ({preset})")


@pytest.mark.parity(artifact="vision")
@pytest.mark.parity(artifact="embedding")
@pytest.mark.parametrize("precision", ["int4"])
@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_int4_export_keeps_vision_and_embedding_fp32(preset, precision, exported, reference, record_parity):
    out = exported(preset, *DEFAULT_INT4)
    report = {**vision_parity(out, reference(preset), [[1, 4, 6], [2, 2, 4]]), **embedding_parity(out, reference(preset))}
    record_parity(report)
    assert_within(report, tolerance(precision).vision, f"int4 export's vision/embedding ({preset})")
    for name in ("vision.onnx", "embedding.onnx"):
        types = {i.data_type for i in onnx.load(str(out / name), load_external_data=False).graph.initializer}
        assert onnx.TensorProto.FLOAT16 not in types and onnx.TensorProto.BFLOAT16 not in types


def test_int4_graph_is_og_int4_with_deepstack(exported, reference):
    spec = reference("tied").spec
    model = onnx.load(str(exported("tied", *DEFAULT_INT4) / io_contract.DECODER.filename), load_external_data=False)
    ops = [n.op_type for n in model.graph.node]
    assert "MatMul" not in ops and ops.count("MatMulNBits") == 7 * spec.text.num_hidden_layers + 1
    levels = {a.i for n in model.graph.node if n.op_type == "MatMulNBits" for a in n.attribute if a.name == "accuracy_level"}
    assert levels == {4}  # og's CPU default
    adds = [n.name for n in model.graph.node if n.name.endswith("/deepstack/Add")]
    assert adds == [f"/model/layers.{k}/deepstack/Add" for k in range(spec.num_deepstack)]


def test_int4_block_size_flag(exported):
    model = onnx.load(str(exported("awkward", "-p", "int4", "-e", "cpu", "--int4_block_size", "16") / "model.onnx"), load_external_data=False)
    sizes = {a.i for n in model.graph.node if n.op_type == "MatMulNBits" for a in n.attribute if a.name == "block_size"}
    assert sizes == {16}


@pytest.mark.parity(artifact="end_to_end")
@pytest.mark.parametrize("precision", ["int4"])
@pytest.mark.parametrize("preset", ALL_PRESETS)
@pytest.mark.parametrize("case", list(SHORT_CASES))
def test_int4_through_og_equals_transformers_on_dequantized_weights(
    preset, case, precision, exported, dequantized, record_parity
):
    out = exported(preset, *EXACT_INT4)
    check_generation_case(out, dequantized(preset), case, precision, record_parity, f"int4 {preset}/{case}")


def _kl(p_logits, q_logits):
    p = np.exp(p_logits - p_logits.max()); p /= p.sum()
    q = np.exp(q_logits - q_logits.max()); q /= q.sum()
    return float(np.sum(p * (np.log(p + 1e-30) - np.log(q + 1e-30))))


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_report_int4_cost_against_fp32(preset, exported, reference, record_parity):
    """int4 at og's CPU default (accuracy_level 4) against the fp32 transformers model: how many
    greedy tokens agree and the KL divergence per step, for the record."""
    prompt = reference(preset).processor.apply_chat_template(SHORT_CASES["one_image"][0], add_generation_prompt=True)
    image = make_picture(96, 128, 1)
    ours = og_generate(exported(preset, *DEFAULT_INT4), prompt, [image], 16, processor="ours")
    theirs = hf_generate(reference(preset), prompt, [Image.fromarray(image)], 16)
    cmp = compare_generations(ours, theirs)
    steps = cmp.matching_steps + 1 if cmp.matching_steps < 16 else 16
    kl = [_kl(b, a) for a, b in zip(ours.logits[:steps], theirs.logits[:steps])]
    record_parity(f"int4 (accuracy_level 4) vs fp32: {cmp.matching_steps}/16 leading tokens agree, "
                  f"KL(fp32||int4) mean {np.mean(kl):.3g} max {np.max(kl):.3g}, max |logit diff| {cmp.max_logit_diff:.3g}")
    assert np.isfinite(kl).all()
