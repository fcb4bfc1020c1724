"""End to end with genai_qwen3vl.Qwen3VLProcessor feeding the stock og.Generator, against
transformers: the half-way image sizes og's own processor gets wrong, mixed images, extreme
aspect ratios, videos (frame arrays and a file) and image + video in one prompt."""

import pytest
from PIL import Image

from genai_qwen3vl.testing.media import make_frames, make_picture, write_video
from genai_qwen3vl.verify.generation import compare_generations, hf_generate, og_generate, og_inputs

from ..helpers import assert_generation_case, targets
from ..resize_rules import hf_smart_resize

IMG = {"type": "image"}
VID = {"type": "video"}


def _ask(*items, text="Describe what you see."):
    return [{"role": "user", "content": [*items, {"type": "text", "text": text}]}]


# name -> (preset, messages, images (h, w, seed), videos (frames, h, w, fps))
CASES = {
    "1280x720": ("real_limits", _ask(IMG), [(720, 1280, 1)], []),
    "848x480": ("real_limits", _ask(IMG), [(480, 848, 2)], []),
    "400x300": ("real_limits", _ask(IMG), [(300, 400, 3)], []),
    "half_way_tiny": ("awkward", _ask(IMG), [(80, 112, 4)], []),
    "small_fine_detail_upscaled": ("awkward", _ask(IMG), [(23, 31, 5)], []),
    "near_200_to_1": ("awkward", _ask(IMG), [(20, 3990, 6)], []),
    "mixed_sizes": ("deep", _ask(IMG, IMG, IMG), [(80, 112, 7), (300, 400, 8), (64, 64, 9)], []),
    "video_frames": ("awkward", _ask(VID), [], [(10, 64, 96, 4.0)]),
    "video_frames_resized": ("tied", _ask(VID), [], [(9, 100, 150, 3.0)]),
    "video_file": ("awkward", _ask(VID), [], ["file"]),
    "image_and_video": ("deep", _ask(VID, IMG), [(96, 128, 10)], [(8, 64, 96, 2.0)]),
}


@pytest.mark.parity(artifact="end_to_end")
@pytest.mark.parametrize("target", targets("fp32/cpu"))
@pytest.mark.parametrize("case", list(CASES))
def test_our_processor_through_og_matches_transformers(case, target, exported, reference, tmp_path, record_parity):
    preset, messages, image_specs, video_specs = CASES[case]
    ref = reference(preset)
    images = [make_picture(h, w, seed) for h, w, seed in image_specs]
    videos, fps = [], []
    for spec in video_specs:
        if spec == "file":
            videos.append(str(write_video(tmp_path / "clip.mp4", make_frames(20, 64, 96, seed=3), fps=8)))
            fps.append(None)
        else:
            n, h, w, rate = spec
            videos.append(make_frames(n, h, w))
            fps.append(rate)
    prompt = ref.processor.apply_chat_template(messages, add_generation_prompt=True)
    tol = target.tolerance
    ours = og_generate(exported(preset, *target.flags), prompt, images, tol.token_steps, videos=videos, video_fps=fps, processor="ours")
    theirs = hf_generate(ref, prompt, [Image.fromarray(x) for x in images], tol.token_steps, videos=videos, video_fps=fps)
    cmp = compare_generations(ours, theirs)
    record_parity(cmp.summary())
    assert_generation_case(cmp, tol, f"{preset}/{case}")


@pytest.mark.og_behaviour(version="0.18.0", what="its image processor rounds halves away from zero in smart_resize")
def test_og_stock_processor_differs_on_1280x720(exported, reference, image_file):
    """Records why this processor exists: og's stock processor gives 1280x720 another grid than
    transformers (46x80 instead of 44x80 with Qwen3-VL's pixel limits). If og fixes its
    rounding, this fails and docs/processor.md's table must change."""
    ref = reference("real_limits")
    path = image_file(720, 1280, 1)
    prompt = ref.processor.apply_chat_template(_ask(IMG), add_generation_prompt=True)
    stock = og_inputs(exported("real_limits"), prompt, [path], processor="stock")
    ours = og_inputs(exported("real_limits"), prompt, [path], processor="ours")
    hf = ref.processor(text=[prompt], images=[Image.open(path)], return_tensors="np")
    p = ref.spec.image_processor
    assert hf_smart_resize(720, 1280, 32, p.min_pixels, p.max_pixels) == (704, 1280)
    assert ours["image_grid_thw"].as_numpy().tolist() == hf["image_grid_thw"].tolist() == [[1, 44, 80]]
    assert stock["image_grid_thw"].as_numpy().tolist() == [[1, 46, 80]]
    assert stock["input_ids"].as_numpy().shape[-1] != hf["input_ids"].shape[-1]
