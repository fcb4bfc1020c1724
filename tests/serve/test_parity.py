"""Through the official ``openai`` client, the server's greedy answers are og's Generator's for
the same messages and media, token for token, and those are transformers' (the parity reference,
within the fp32 tolerance's near-tie rule)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from genai_qwen3vl.model.precisions import target
from genai_qwen3vl.testing.media import make_frames, make_picture, write_video
from genai_qwen3vl.verify.generation import compare_generations, hf_generate, model_eos_ids, og_generate
from tests.helpers import assert_generation_case

from .conftest import PRESET, data_url, picture_url

STEPS = target("fp32", "cpu").tolerance.token_steps  # what the fp32 parity asks: 16 greedy steps
IMG = {"type": "image"}


def _text(t: str) -> dict:
    return {"type": "text", "text": t}


def _image(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


# name -> (OpenAI messages, the transformers messages for the same prompt, pictures (h, w, seed), video)
def _cases(media_dir):
    pic = lambda h, w, s: make_picture(h, w, s)  # noqa: E731
    local = media_dir / "local.png"
    Image.fromarray(pic(80, 112, 7)).save(local)
    video = write_video(media_dir / "clip.mp4", make_frames(12, 64, 96, seed=3), fps=8)
    return {
        "text": ([{"role": "user", "content": "Write a poem."}], [{"role": "user", "content": [_text("Write a poem.")]}], [], None),
        "system_and_text": (
            [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Count the cats."}],
            [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": [_text("Count the cats.")]}],
            [],
            None,
        ),
        "one_image": (
            [{"role": "user", "content": [_image(picture_url(96, 128, 1)), _text("Describe.")]}],
            [{"role": "user", "content": [IMG, _text("Describe.")]}],
            [(96, 128, 1)],
            None,
        ),
        "two_images": (
            [{"role": "user", "content": [_image(picture_url(96, 128, 2)), _image(picture_url(64, 200, 3)), _text("Compare.")]}],
            [{"role": "user", "content": [IMG, IMG, _text("Compare.")]}],
            [(96, 128, 2), (64, 200, 3)],
            None,
        ),
        "image_in_earlier_turn": (
            [
                {"role": "user", "content": [_image(picture_url(96, 128, 4)), _text("Describe.")]},
                {"role": "assistant", "content": "A red square."},
                {"role": "user", "content": "What colour is the sky?"},
            ],
            [
                {"role": "user", "content": [IMG, _text("Describe.")]},
                {"role": "assistant", "content": [_text("A red square.")]},
                {"role": "user", "content": [_text("What colour is the sky?")]},
            ],
            [(96, 128, 4)],
            None,
        ),
        "video": (
            [
                {
                    "role": "user",
                    "content": [{"type": "video_url", "video_url": {"url": data_url(video, "video/mp4")}}, _text("What happens?")],
                }
            ],
            [{"role": "user", "content": [{"type": "video"}, _text("What happens?")]}],
            [],
            video,
        ),
        "local_file": (
            [{"role": "user", "content": [_image(str(local)), _text("Describe.")]}],
            [{"role": "user", "content": [IMG, _text("Describe.")]}],
            [(80, 112, 7)],
            None,
        ),
    }


_DIRECT: dict = {}
CASE_NAMES = ["text", "system_and_text", "one_image", "two_images", "image_in_earlier_turn", "video", "local_file"]


def _server_answer(client, messages, stream: bool) -> tuple[list[int], list[int], str, object]:
    """(prompt ids, generated ids, text, usage) from the server, greedy."""
    kwargs = dict(
        model=client.models.list().data[0].id, messages=messages, max_tokens=STEPS, temperature=0, extra_body={"return_token_ids": True}
    )
    if not stream:
        r = client.chat.completions.create(**kwargs)
        extra = r.model_extra
        return extra["prompt_token_ids"], r.choices[0].model_extra["token_ids"], r.choices[0].message.content, r.usage
    prompt, tokens, text, usage = None, [], [], None
    for chunk in client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs):
        if chunk.model_extra.get("prompt_token_ids") is not None:
            prompt = chunk.model_extra["prompt_token_ids"]
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            tokens += choice.model_extra.get("token_ids") or []
            text.append(choice.delta.content or "")
    return prompt, tokens, "".join(text), usage


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("case", CASE_NAMES)
def test_server_equals_og_and_transformers(case, stream, client, media_dir, exported, reference, record_parity):
    out, ref = exported(PRESET), reference(PRESET)
    messages, hf_messages, specs, video = _cases(media_dir)[case]
    prompt_ids, tokens, text, usage = _server_answer(client, messages, stream)

    prompt = ref.processor.apply_chat_template(hf_messages, add_generation_prompt=True)
    images = [make_picture(*s) for s in specs]
    videos = [str(video)] if video else []
    if case not in _DIRECT:  # og's and transformers' own runs, shared by the json and stream tests
        ours = og_generate(out, prompt, images, STEPS, videos=videos, processor="ours")
        theirs = hf_generate(ref, prompt, [Image.fromarray(x) for x in images], STEPS, videos=videos)
        _DIRECT[case] = ours, theirs
    ours, theirs = _DIRECT[case]
    assert prompt_ids == ours.prompt_ids, "the server's prompt differs from the chat template + processor's"
    assert usage.prompt_tokens == len(prompt_ids) and usage.completion_tokens == len(tokens)
    assert 0 < len(tokens) <= STEPS
    assert text == ref.processor.tokenizer.decode(tokens, skip_special_tokens=True), "the server's text is not transformers' decode"
    # og's run suppresses eos (min_length) to compare 16 steps; the server stops at eos
    eos = set(model_eos_ids(out))
    if len(tokens) < STEPS:
        assert tokens[-1] in eos, f"the server stopped after {len(tokens)} tokens without eos"
        assert int(np.argmax(ours.logits[len(tokens) - 1])) == tokens[-1]
        tokens = tokens[:-1]
    assert tokens == ours.tokens[: len(tokens)], f"server {tokens} != og {ours.tokens}"

    cmp = compare_generations(ours, theirs)
    record_parity(f"server {case}: {cmp.summary()}")
    assert_generation_case(cmp, target("fp32", "cpu").tolerance, f"served {case}")
    json.dumps(messages)  # the case is plain JSON, as a client sends it
