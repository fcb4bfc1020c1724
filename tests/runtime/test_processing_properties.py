"""Property-based: for any image sizes, aspect ratios and counts, Qwen3VLProcessor either
matches transformers exactly or raises ValueError (and then transformers refuses too)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from genai_qwen3vl.runtime.processor import Qwen3VLProcessor
from genai_qwen3vl.testing.media import make_picture

IMG = "<|vision_start|><|image_pad|><|vision_end|>"

side = st.integers(min_value=1, max_value=400)
thin = st.tuples(st.integers(1, 4), st.integers(150, 1200))  # aspect ratios around the 200:1 limit
size = st.one_of(st.tuples(side, side), thin, thin.map(lambda t: (t[1], t[0])))


@pytest.fixture(scope="module")
def pair(exported, reference):
    return Qwen3VLProcessor(exported("awkward")), reference("awkward").processor


def _outcome(fn):
    try:
        return fn(), None
    except ValueError as exc:
        return None, exc


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(size, max_size=3), extra_markers=st.integers(-1, 1), seed=st.integers(0, 10))
def test_matches_transformers_or_raises_value_error(pair, sizes, extra_markers, seed):
    ours_proc, hf_proc = pair
    arrays = [make_picture(h, w, seed + i) for i, (h, w) in enumerate(sizes)]
    markers = max(0, len(arrays) + extra_markers)
    prompt = "<|im_start|>user\n" + IMG * markers + "Describe.<|im_end|>\n"
    ours, our_error = _outcome(lambda: ours_proc.process(prompt, images=arrays or None))
    theirs, their_error = _outcome(lambda: hf_proc(text=[prompt], images=[Image.fromarray(a) for a in arrays] or None, return_tensors="np"))
    if their_error is not None or our_error is not None:
        assert our_error is not None and their_error is not None, (our_error, their_error)
        return
    assert ours.input_ids.tolist() == theirs["input_ids"].tolist()
    if arrays:
        assert ours.image_grid_thw.tolist() == theirs["image_grid_thw"].tolist()
        assert float(np.abs(ours.pixel_values - theirs["pixel_values"]).max()) <= 1e-6
