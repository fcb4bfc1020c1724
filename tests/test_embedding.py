"""embedding.onnx against transformers' token embedding + visual scatter."""

import pytest

from genai_qwen3vl.parity import assert_within, embedding_parity
from genai_qwen3vl.tolerances import tolerance

from .conftest import ALL_PRESETS


@pytest.mark.parity(artifact="embedding")
@pytest.mark.parametrize("precision", ["fp32"])
@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_embedding_matches_transformers(preset, precision, exported, reference, record_parity):
    report = embedding_parity(exported(preset), reference(preset), seed=7)
    assert {"decode_step", "decode_step_image_pad", "batch_of_two", "prompt"} <= set(report)
    record_parity(report)
    assert_within(report, tolerance(precision).embedding, f"embedding ({preset})")
