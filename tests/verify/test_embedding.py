"""embedding.onnx against transformers' token embedding + visual scatter."""

import pytest

from genai_qwen3vl.verify.artifacts import embedding_parity
from genai_qwen3vl.verify.compare import assert_within

from ..conftest import ALL_PRESETS
from ..helpers import targets


@pytest.mark.parity(artifact="embedding")
@pytest.mark.parametrize("target", targets("fp32/cpu"))
@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_embedding_matches_transformers(preset, target, exported, reference, record_parity):
    report = embedding_parity(exported(preset, *target.flags), reference(preset), seed=7)
    assert {"decode_step", "decode_step_image_pad", "batch_of_two", "prompt"} <= set(report)
    record_parity(report)
    assert_within(report, target.tolerance.embedding, f"embedding ({preset})")
