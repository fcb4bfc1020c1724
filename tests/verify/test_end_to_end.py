"""End to end through the stock og API, exactly as og's samples use it (og.Model,
create_multimodal_processor, og.Images.open, og.Generator, greedy), against transformers'
Qwen3VLForConditionalGeneration with its processor on the PIL image backend.

Bar: identical prompt ids, og's 3D position ids equal to get_rope_index, identical greedy
tokens over 16 steps, and max |logit difference| within the fp32 tolerance at every step.
"""

import dataclasses

import pytest
from PIL import Image

from genai_qwen3vl.testing.tiny import PRESETS
from genai_qwen3vl.verify.generation import compare_generations, hf_generate, og_generate

from ..conftest import ALL_PRESETS
from ..helpers import assert_generation_case, targets
from ..resize_rules import hf_smart_resize, og_smart_resize


@dataclasses.dataclass(frozen=True)
class Case:
    messages: list
    images: list  # (height, width, seed) per image, in prompt order


def _user(*items):
    return {"role": "user", "content": list(items)}


IMAGE = {"type": "image"}


def _text(s):
    return {"type": "text", "text": s}


CASES = {
    "text_only": Case([_user(_text("Write a short poem about the sea."))], []),
    "one_image": Case([_user(IMAGE, _text("Describe this image."))], [(96, 128, 1)]),
    "two_images_same_size": Case([_user(IMAGE, IMAGE, _text("Compare the two pictures."))], [(96, 128, 2), (96, 128, 3)]),
    "two_images_different_sizes": Case([_user(IMAGE, _text("and"), IMAGE, _text("What differs?"))], [(96, 128, 4), (64, 200, 5)]),
    "multi_turn_image_earlier": Case(
        [
            _user(IMAGE, _text("What is in the picture?")),
            {"role": "assistant", "content": [_text("A red circle on a gradient.")]},
            _user(_text("What colour is the sky?")),
        ],
        [(96, 128, 6)],
    ),
    "small_image_upscaled": Case([_user(IMAGE, _text("Read the text in the sign."))], [(40, 50, 7)]),
    "large_image_downscaled": Case([_user(IMAGE, _text("How many objects are there?"))], [(600, 800, 8)]),
}
# The preset with Qwen3-VL's real pixel limits makes >= 64 tokens per image: fewer cases.
CASES_FOR = {name: list(CASES) for name in ALL_PRESETS}
CASES_FOR["real_limits"] = ["text_only", "one_image", "small_image_upscaled"]
CASES_FOR["deep"] = ["text_only", "two_images_different_sizes", "multi_turn_image_earlier", "large_image_downscaled"]
PARAMS = [(p, c) for p in ALL_PRESETS for c in CASES_FOR[p]]


@pytest.mark.parity(artifact="end_to_end")
@pytest.mark.parametrize("target", targets("fp32/cpu"))
@pytest.mark.parametrize("preset,case", PARAMS)
def test_og_generation_matches_transformers(preset, case, target, exported, reference, image_file, record_parity):
    ref = reference(preset)
    spec = ref.spec
    c = CASES[case]
    p = spec.image_processor
    factor = p.patch_size * p.merge_size
    for h, w, _ in c.images:
        # precondition of this test: og's stock resize rule and transformers' agree on this size
        assert og_smart_resize(h, w, factor, p.min_pixels, p.max_pixels) == hf_smart_resize(h, w, factor, p.min_pixels, p.max_pixels), (
            f"{h}x{w} is resized differently by og and transformers; pick another size"
        )
    paths = [image_file(h, w, seed) for h, w, seed in c.images]
    prompt = ref.processor.apply_chat_template(c.messages, add_generation_prompt=True)
    tol = target.tolerance
    ours = og_generate(exported(preset, *target.flags), prompt, paths, steps=tol.token_steps)
    theirs = hf_generate(ref, prompt, [Image.open(x) for x in paths], steps=tol.token_steps)
    cmp = compare_generations(ours, theirs)
    record_parity(cmp.summary())
    assert_generation_case(cmp, tol, f"{preset}/{case}")
    assert cmp.steps == tol.token_steps


def test_cases_cover_both_resize_branches():
    """The upscaled and downscaled cases really hit smart_resize's two branches."""
    p = PRESETS["awkward"]
    ((h, w, _),) = CASES["small_image_upscaled"].images
    gh, gw = hf_smart_resize(h, w, 32, *p.pixels)
    assert gh > h and gw > w
    ((h, w, _),) = CASES["large_image_downscaled"].images
    gh, gw = hf_smart_resize(h, w, 32, *p.pixels)
    assert gh < h and gw < w
