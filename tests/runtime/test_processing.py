"""genai_qwen3vl.Qwen3VLProcessor against transformers' Qwen3VLProcessor: token ids, grids,
timestamps and pixel values, for images of every resize branch and the half-way sizes og's
stock processor gets wrong, and for videos. Pixels: equal (1e-6) to transformers' PIL image
backend, or with image_backend="torchvision" to its default torchvision backend; videos equal to
its video processor (torchvision only)."""

import numpy as np
import pytest
from PIL import Image

from genai_qwen3vl.runtime.images import smart_resize
from genai_qwen3vl.runtime.processor import Qwen3VLProcessor
from genai_qwen3vl.testing.media import make_frames, make_picture, write_video

from ..resize_rules import hf_smart_resize, og_smart_resize

IMG = "<|vision_start|><|image_pad|><|vision_end|>"
VID = "<|vision_start|><|video_pad|><|vision_end|>"


def _prompt(*markers):
    return "<|im_start|>user\n" + "".join(markers) + "Describe.<|im_end|>\n<|im_start|>assistant\n"


PIXEL_TOL = 1e-6


@pytest.fixture(scope="module")
def setups(exported, reference, checkpoints):
    """preset -> (our processor, transformers with PIL images, transformers default (torchvision))."""
    from transformers import AutoProcessor

    cache = {}

    def get(preset):
        if preset not in cache:
            cache[preset] = (
                Qwen3VLProcessor(exported(preset)),
                reference(preset).processor,
                AutoProcessor.from_pretrained(checkpoints(preset)),
            )
        return cache[preset]

    return get


def _maxdiff(a, b):
    assert a.shape == b.shape
    return float(np.abs(a - b).max())


def _uint8_steps(a, b, std):
    """max |a-b| in uint8 steps of the un-normalized pixels (rows are channel-major)."""
    d = np.abs(a - b).reshape(a.shape[0], len(std), -1) * np.asarray(std, dtype=np.float32)[None, :, None] * 255
    return float(d.max())


# (preset, height, width): both smart_resize branches and the half-way sizes
IMAGE_CASES = [
    ("real_limits", 720, 1280),  # 1280x720: og's stock processor gets 46x80, transformers 44x80
    ("real_limits", 480, 848),
    ("real_limits", 300, 400),
    ("real_limits", 37, 53),  # small, upscaled, fine detail
    ("real_limits", 20, 3990),  # aspect ratio 199.5, just under the 200 limit
    ("awkward", 80, 112),  # half-way on a tiny model's grid
    ("awkward", 600, 800),  # downscaled
    ("awkward", 31, 29),  # upscaled
    ("tied", 3000, 16),  # tall and thin
]


@pytest.mark.parametrize("preset,height,width", IMAGE_CASES)
def test_image_matches_transformers(preset, height, width, setups, exported, record_parity):
    ours, pil, tv = setups(preset)
    image = Image.fromarray(make_picture(height, width, seed=height + width))
    prompt = _prompt(IMG)
    out = ours.process(prompt, images=[image])
    ref = pil(text=[prompt], images=[image], return_tensors="np")
    assert out.input_ids.tolist() == ref["input_ids"].tolist()
    assert out.image_grid_thw.tolist() == ref["image_grid_thw"].tolist()
    pil_diff = _maxdiff(out.pixel_values, ref["pixel_values"])
    ref_tv = tv(text=[prompt], images=[image], return_tensors="np")
    out_tv = Qwen3VLProcessor(exported(preset), image_backend="torchvision").process(prompt, images=[image])
    assert out_tv.input_ids.tolist() == ref_tv["input_ids"].tolist()
    tv_diff = _maxdiff(out_tv.pixel_values, ref_tv["pixel_values"])
    # how far transformers' own two backends are apart here, for the record
    gap = _uint8_steps(ref["pixel_values"], ref_tv["pixel_values"], ours.image_settings.image_std)
    record_parity(
        {"vs PIL backend": pil_diff, "torchvision mode vs torchvision backend": tv_diff, "PIL-torchvision gap (uint8 steps)": gap}
    )
    assert pil_diff <= PIXEL_TOL and tv_diff <= PIXEL_TOL


def test_half_way_sizes_really_differ_between_rules():
    """The half-way cases above are the ones where og's rounding differs."""
    for h, w in [(720, 1280), (480, 848), (300, 400)]:
        assert og_smart_resize(h, w, 32, 65536, 16777216) != hf_smart_resize(h, w, 32, 65536, 16777216)
        assert smart_resize(h, w, 32, 65536, 16777216) == hf_smart_resize(h, w, 32, 65536, 16777216)
    assert og_smart_resize(80, 112, 32, 6144, 40960) != hf_smart_resize(80, 112, 32, 6144, 40960)


def test_mixed_images_and_input_types(setups, image_file):
    ours, pil, _ = setups("awkward")
    a = make_picture(96, 128, 1)
    b = make_picture(64, 200, 2)
    path = image_file(50, 70, 3)
    prompt = _prompt(IMG, "and", IMG, "and", IMG)
    out = ours.process(prompt, images=[a, Image.fromarray(b), str(path)])
    ref = pil(text=[prompt], images=[Image.fromarray(a), Image.fromarray(b), Image.open(path)], return_tensors="np")
    assert out.input_ids.tolist() == ref["input_ids"].tolist()
    assert out.image_grid_thw.tolist() == ref["image_grid_thw"].tolist()
    assert _maxdiff(out.pixel_values, ref["pixel_values"]) <= PIXEL_TOL


def test_alpha_and_grayscale_like_transformers(setups):
    ours, pil, _ = setups("awkward")
    rng = np.random.default_rng(0)
    rgba = Image.fromarray(rng.integers(0, 256, (70, 90, 4), dtype=np.uint8), "RGBA")
    gray = Image.fromarray(rng.integers(0, 256, (70, 90), dtype=np.uint8), "L")
    prompt = _prompt(IMG, IMG)
    out = ours.process(prompt, images=[rgba, gray])
    ref = pil(text=[prompt], images=[rgba, gray], return_tensors="np")
    assert _maxdiff(out.pixel_values, ref["pixel_values"]) <= PIXEL_TOL


# (preset, frames, height, width, fps)
VIDEO_CASES = [
    ("awkward", 10, 64, 96, 4.0),  # no resize needed
    ("awkward", 9, 100, 150, 3.0),  # resized (one axis up, one down), odd frame count
    ("awkward", 40, 72, 72, 30.0),  # long clip at a high rate: sampled down to min_frames
    ("real_limits", 5, 90, 120, 2.0),  # upscaled to the real min pixels, frames padded to pairs
    ("tied", 24, 48, 200, 12.0),
]


@pytest.mark.parametrize("preset,n,h,w,fps", VIDEO_CASES)
def test_video_frames_match_transformers(preset, n, h, w, fps, setups, reference):
    from genai_qwen3vl.verify.generation import hf_video_input

    ours, _, tv = setups(preset)
    frames = make_frames(n, h, w, seed=n)
    prompt = _prompt(VID)
    out = ours.process(prompt, videos=[frames], video_fps=fps)
    video, meta, sample = hf_video_input(reference(preset), frames, fps)
    ref = tv(text=[prompt], videos=[video], video_metadata=[meta], do_sample_frames=sample, return_tensors="np")
    assert out.input_ids.tolist() == ref["input_ids"].tolist()  # includes the "<t seconds>" text
    assert out.video_grid_thw.tolist() == ref["video_grid_thw"].tolist()
    assert _maxdiff(out.pixel_values, ref["pixel_values_videos"]) <= PIXEL_TOL


def test_video_file_matches_transformers(tmp_path, setups, reference):
    from genai_qwen3vl.verify.generation import hf_video_input

    path = write_video(tmp_path / "clip.mp4", make_frames(20, 64, 96), fps=8)
    ours, _, tv = setups("awkward")
    prompt = _prompt(VID)
    out = ours.process(prompt, videos=[str(path)])
    video, meta, sample = hf_video_input(reference("awkward"), str(path))
    ref = tv(text=[prompt], videos=[video], video_metadata=[meta], do_sample_frames=sample, return_tensors="np")
    assert out.input_ids.tolist() == ref["input_ids"].tolist()
    assert out.video_grid_thw.tolist() == ref["video_grid_thw"].tolist()
    assert _maxdiff(out.pixel_values, ref["pixel_values_videos"]) <= PIXEL_TOL


def test_image_and_video_in_one_prompt(setups, reference):
    from genai_qwen3vl.verify.generation import hf_video_input

    ours, pil, _ = setups("awkward")
    frames = make_frames(8, 64, 96, seed=5)
    image = make_picture(96, 128, 9)
    prompt = _prompt(VID, "then", IMG)
    out = ours.process(prompt, images=[image], videos=[frames], video_fps=4.0)
    video, meta, sample = hf_video_input(reference("awkward"), frames, 4.0)
    ref = pil(
        text=[prompt], images=[Image.fromarray(image)], videos=[video], video_metadata=[meta], do_sample_frames=sample, return_tensors="np"
    )
    assert out.input_ids.tolist() == ref["input_ids"].tolist()
    assert out.image_grid_thw.tolist() == ref["image_grid_thw"].tolist()
    assert out.video_grid_thw.tolist() == ref["video_grid_thw"].tolist()
    # og gets images first, then the video's frame groups, each as a t=1 grid
    n_image_rows = int(ref["image_grid_thw"].prod())
    assert _maxdiff(out.pixel_values[:n_image_rows], ref["pixel_values"]) <= PIXEL_TOL
    assert _maxdiff(out.pixel_values[n_image_rows:], ref["pixel_values_videos"]) <= PIXEL_TOL
    assert out.og_grid().tolist() == ref["image_grid_thw"].tolist() + [[1, 4, 6]] * int(ref["video_grid_thw"][0, 0])


# prompts with videos in every place: a video between two images, two videos, vLLM's bare pad
# (the chat template's wrapper left out), and a bare pad before a wrapped one (videos in prompt
# order, as 5.25; 4.57.1 filled the wrapped marker first there)
VIDEO_LAYOUTS = {
    "image_video_image": (IMG, "first, then", VID, "and last", IMG),
    "two_videos": (VID, "versus", VID),
    "bare_pad": ("<|video_pad|>",),
    "bare_then_wrapped": ("<|video_pad|>", "and", VID),
}


@pytest.mark.parametrize("layout", VIDEO_LAYOUTS)
def test_video_prompt_layouts_match_transformers(layout, setups, reference):
    from genai_qwen3vl.verify.generation import hf_video_input

    ours, pil, _ = setups("awkward")
    markers = VIDEO_LAYOUTS[layout]
    n_images, n_videos = markers.count(IMG), sum(m in (VID, "<|video_pad|>") for m in markers)
    images = [make_picture(96 + 32 * i, 128, 9 + i) for i in range(n_images)]
    clips = [(make_frames(8 + 4 * i, 64, 96, seed=5 + i), 4.0 + i) for i in range(n_videos)]
    prompt = _prompt(*markers)
    out = ours.process(prompt, images=images, videos=[f for f, _ in clips], video_fps=[fps for _, fps in clips])
    hf = [hf_video_input(reference("awkward"), f, fps) for f, fps in clips]
    ref = pil(
        text=[prompt],
        images=[Image.fromarray(i) for i in images] or None,
        videos=[v for v, _, _ in hf],
        video_metadata=[m for _, m, _ in hf],
        do_sample_frames=hf[0][2],
        return_tensors="np",
    )
    assert out.input_ids.tolist() == ref["input_ids"].tolist()
    assert out.video_grid_thw.tolist() == ref["video_grid_thw"].tolist()
    assert _maxdiff(out.pixel_values[len(out.pixel_values) - len(ref["pixel_values_videos"]) :], ref["pixel_values_videos"]) <= PIXEL_TOL


def test_video_prompt_is_the_released_format_literally(setups):
    """Qwen3-VL's released processor (transformers 4.57.1; 5.25 again) replaces the template's
    whole <|vision_start|><|video_pad|><|vision_end|> with one group per 2 frames: <t seconds>,
    then <|vision_start|>, one pad per merged patch, <|vision_end|>. transformers 5.24 kept an
    outer start/end pair around the groups; this pins the released format whatever the installed
    reference does. 4 frames at 1 fps: groups of frames (0, 1) and (2, 3), at 0.5 s and 2.5 s;
    64x96 pixels with 16-pixel patches merged 2x2: 6 pads a group."""
    ours, _, _ = setups("awkward")
    out = ours.process(_prompt(VID), videos=[make_frames(4, 64, 96, seed=3)], video_fps=1.0)
    assert out.text == (
        "<|im_start|>user\n"
        "<0.5 seconds><|vision_start|>"
        "<|video_pad|><|video_pad|><|video_pad|><|video_pad|><|video_pad|><|video_pad|>"
        "<|vision_end|>"
        "<2.5 seconds><|vision_start|>"
        "<|video_pad|><|video_pad|><|video_pad|><|video_pad|><|video_pad|><|video_pad|>"
        "<|vision_end|>"
        "Describe.<|im_end|>\n<|im_start|>assistant\n"
    )
    assert out.input_ids[0].tolist() == ours.tokenizer.encode(out.text).ids
    assert out.video_grid_thw.tolist() == [[2, 4, 6]]


MESSAGES = [
    [{"role": "user", "content": [{"type": "image", "image": "x.png"}, {"type": "text", "text": "What is this?"}]}],
    [
        {"role": "user", "content": [{"type": "video", "video": "v.mp4"}, {"type": "image"}, {"type": "text", "text": "Compare."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "They match."}]},
        {"role": "user", "content": "Why?"},
    ],
]


@pytest.mark.parametrize("messages", MESSAGES)
def test_chat_template_matches_transformers(messages, setups):
    ours, pil, _ = setups("awkward")
    assert ours.apply_chat_template(messages) == pil.apply_chat_template(messages, add_generation_prompt=True)


def test_counts_must_match_markers(setups):
    ours, _, _ = setups("awkward")
    with pytest.raises(ValueError, match="1 image markers .* but 2 images"):
        ours.process(_prompt(IMG), images=[make_picture(64, 64), make_picture(64, 64)])
    with pytest.raises(ValueError, match="1 video markers .* but 0 videos"):
        ours.process(_prompt(VID))
    with pytest.raises(ValueError, match="aspect ratio"):
        ours.process(_prompt(IMG), images=[make_picture(10, 2100)])


def test_video_smart_resize_matches_transformers():
    """One smart_resize serves images and videos; the video rule (budget over all frames, tiny
    sides scaled up first) equals transformers' Qwen3-VL video smart_resize."""
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize as hf_video_smart_resize

    cases = [(8, 64, 96, 4096, 100000), (5, 20, 700, 100, 10**7), (40, 720, 1280, 131072, 786432), (2, 16, 16, 10, 10**9)]
    for frames, h, w, low, high in cases:
        assert smart_resize(h, w, 32, low, high, frames=frames, temporal_factor=2) == hf_video_smart_resize(
            frames, h, w, temporal_factor=2, factor=32, min_pixels=low, max_pixels=high
        )


def test_folder_without_pixel_limits_is_refused_as_the_exporter_refuses(exported, tmp_path):
    """The runtime reads the same parser as the exporter: no silent fallback to Qwen2-VL's limits."""
    import json
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(exported("awkward"), folder)
    pre = json.loads((folder / "preprocessor_config.json").read_text())
    pre.pop("size")
    (folder / "preprocessor_config.json").write_text(json.dumps(pre))
    with pytest.raises(ValueError, match="preprocessor_config.json gives no pixel limits"):
        Qwen3VLProcessor(folder)
