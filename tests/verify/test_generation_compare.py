"""The generation comparison itself: tokens that part where transformers' own margin is within
what the logit tolerance allows pass (a near tie, seen in fp16); any larger margin fails."""

import numpy as np
import pytest

from genai_qwen3vl.errors import ParityError
from genai_qwen3vl.model.precisions import FP16
from genai_qwen3vl.verify.generation import Generation, assert_generation_parity, compare_generations


def _runs(margin: float, noise: float):
    """Two greedy runs of 6 steps over a vocabulary of 8 that part at step 3: transformers'
    token there beats ours by ``margin``; every logit differs by ``noise``."""
    rng = np.random.default_rng(0)
    theirs_logits = [rng.normal(0, 1, 8).astype(np.float32) for _ in range(6)]
    tokens = [int(np.argmax(row)) for row in theirs_logits]
    row = theirs_logits[3]
    second = int(np.argsort(row)[-2])
    row[second] = row[tokens[3]] - margin
    ours_logits = [r + noise * (-1) ** np.arange(8) for r in theirs_logits]
    ours_tokens = tokens[:3] + [second] + tokens[4:]
    ours = Generation([1, 2], ours_tokens, ours_logits, np.zeros((3, 2)))
    theirs = Generation([1, 2], tokens, theirs_logits, np.zeros((3, 2)))
    return compare_generations(ours, theirs)


def test_a_near_tie_within_the_tolerance_passes():
    cmp = _runs(margin=0.01, noise=0.009)
    assert cmp.matching_steps == 3 and cmp.divergence_margin == pytest.approx(0.01)
    assert_generation_parity(cmp, FP16.end_to_end, 16, "near tie")


def test_a_clear_preference_fails():
    cmp = _runs(margin=0.5, noise=0.009)
    with pytest.raises(ParityError, match="only 3 greedy tokens agree"):
        assert_generation_parity(cmp, FP16.end_to_end, 16, "clear preference")
