"""model.onnx (og's builder + our DeepStack extension), run in raw ORT, against transformers'
language model with DeepStack inputs, for a prefill and decode steps through the KV cache."""

import numpy as np
import onnx
import pytest

from genai_qwen3vl.model import io_contract
from genai_qwen3vl.model.precisions import FP32
from genai_qwen3vl.verify.artifacts import decoder_parity
from genai_qwen3vl.verify.compare import assert_within

from ..conftest import ALL_PRESETS
from ..helpers import targets


@pytest.mark.parity(artifact="decoder")
@pytest.mark.parametrize("target", targets("fp32/cpu"))
@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_decoder_matches_transformers(preset, target, exported, reference, record_parity):
    report = decoder_parity(exported(preset, *target.flags), reference(preset), seed=11, prompt_len=13, decode_steps=4)
    assert set(report) == {"prefill", "decode.1", "decode.2", "decode.3", "decode.4"}
    record_parity(report)
    assert_within(report, target.tolerance.decoder, f"decoder ({preset})")


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_deepstack_adds_follow_the_first_k_layers(preset, exported, reference):
    spec = reference(preset).spec
    model = onnx.load(str(exported(preset) / io_contract.DECODER.filename), load_external_data=False)
    adds = [n.name for n in model.graph.node if n.name.endswith("/deepstack/Add")]
    assert adds == [f"/model/layers.{k}/deepstack/Add" for k in range(spec.num_deepstack)]
    embeds = next(i for i in model.graph.input if i.name == "inputs_embeds")
    assert embeds.type.tensor_type.shape.dim[-1].dim_value == spec.feature_width


def test_deepstack_is_not_a_no_op(reference):
    """The parity above would be meaningless if DeepStack did not change the logits here:
    transformers without its DeepStack inputs differs by far more than the tolerance."""
    import torch

    ref = reference("awkward")
    H, K = ref.spec.text.hidden_size, ref.spec.num_deepstack
    gen = torch.Generator().manual_seed(0)
    embeds = torch.randn(1, 9, H, generator=gen)
    visual = torch.zeros(1, 9, dtype=torch.bool)
    visual[0, 2:7] = True
    stacks = [torch.randn(5, H, generator=gen) for _ in range(K)]
    pos = torch.arange(9).repeat(3, 1)[:, None, :]
    lm = ref.model.model.language_model
    with torch.no_grad():
        hidden = lm(inputs_embeds=embeds, position_ids=pos, visual_pos_masks=visual, deepstack_visual_embeds=stacks).last_hidden_state
        with_ds = ref.model.lm_head(hidden)
        without = ref.model.lm_head(lm(inputs_embeds=embeds, position_ids=pos).last_hidden_state)
    assert float(np.abs((with_ds - without).numpy()).max()) > 1000 * FP32.decoder


def test_prefill_logits_are_trimmed_to_the_last_position(exported, reference, record_parity):
    """og reads a decoder whose logits have a fixed position dim of 1 as 'trimmed prefill
    logits': the LM head runs on the last position only. --full_prefill_logits keeps them all,
    and both match transformers."""
    for flags, positions in (((), 1), (("-p", "fp32", "-e", "cpu", "--full_prefill_logits"), "sequence_length")):
        out = exported("awkward", *flags)
        model = onnx.load(str(out / io_contract.DECODER.filename), load_external_data=False)
        dim = next(o for o in model.graph.output if o.name == "logits").type.tensor_type.shape.dim[1]
        assert (dim.dim_value or dim.dim_param) == positions
        report = decoder_parity(out, reference("awkward"), seed=2, prompt_len=9, decode_steps=2)
        record_parity(report)
        assert_within(report, FP32.decoder, f"decoder {flags}")
