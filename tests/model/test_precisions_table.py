"""The precision records: every pair the command line accepts is a record, every other pair is
refused with its reason, and each record is self-consistent."""

import pytest

from genai_qwen3vl.model.precisions import ARTIFACTS, EXECUTION_PROVIDERS, PRECISIONS, TARGETS, target


@pytest.mark.parametrize("precision", list(PRECISIONS))
@pytest.mark.parametrize("provider", EXECUTION_PROVIDERS)
def test_every_pair_is_a_target_or_refused_with_a_reason(precision, provider):
    record = PRECISIONS[precision]
    if provider in record.targets:
        t = target(precision, provider)
        assert (t.precision, t.provider) == (precision, provider)
        assert set(t.cpu_checkable) <= set(ARTIFACTS)
        assert t.attention_op in ("GroupQueryAttention", "MultiHeadAttention")
        assert t.quantized == (precision == "int4")
    else:
        with pytest.raises(ValueError, match=f"-p {precision} -e {provider} is not supported: onnxruntime's CPU provider"):
            target(precision, provider)


def test_unknown_names_are_named():
    with pytest.raises(ValueError, match="precision 'int8' is unknown; choose one of fp32, int4, fp16, bf16"):
        target("int8", "cpu")
    with pytest.raises(ValueError, match="execution provider 'dml' is unknown"):
        target("fp32", "dml")


def test_targets_are_unique():
    assert len({t.flags for t in TARGETS}) == len(TARGETS) == 6
