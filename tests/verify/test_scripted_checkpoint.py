"""The scripted checkpoint (the server tests' model): after any prompt ending with the Thinking
generation prompt, transformers' greedy answer is SCRIPTED_OUTPUT then <|im_end|>; its export run
by og's Generator gives the same tokens; og's tokenizer encodes and decodes as transformers' does."""

import json

import numpy as np
import onnxruntime_genai as og
import pytest

from genai_qwen3vl.testing.tiny import SCRIPTED_OUTPUT, SCRIPTED_PIECES, SCRIPTED_TOOL_JSON, scripted_token_ids
from genai_qwen3vl.verify.generation import og_inputs, og_model

WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}
# name -> (messages, tools, picture sizes (height, width, seed))
PROMPTS = {
    "text": ([{"role": "user", "content": "What is the weather in Paris?"}], None, []),
    "image": ([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Weather there?"}]}], None, [(96, 128, 1)]),
    "tools_multi_turn": (
        [
            {"role": "system", "content": "You help."},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where is this?"}]},
            {
                "role": "assistant",
                "content": "<think>\nA city.\n</think>\n\nParis.",
                "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
            },
            {"role": "tool", "content": "sunny"},
            {"role": "user", "content": "And now?"},
        ],
        [WEATHER_TOOL],
        [(64, 64, 2)],
    ),
}


@pytest.fixture(scope="module")
def hf(scripted_checkpoint):
    from genai_qwen3vl.verify.reference import Reference

    return Reference.load(scripted_checkpoint)


def _prompt(hf, name: str, image_file) -> tuple[str, list]:
    messages, tools, pictures = PROMPTS[name]
    prompt = hf.processor.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n<think>\n")
    return prompt, [image_file(*p) for p in pictures]


def _hf_greedy(hf, prompt: str, paths: list) -> tuple[list[int], list[int]]:
    """(prompt ids, generated ids) of transformers' greedy generation, up to eos."""
    import torch
    from PIL import Image

    enc = hf.processor(text=[prompt], images=[Image.open(p) for p in paths] or None, return_tensors="pt")
    with torch.no_grad():
        out = hf.model.generate(**enc, do_sample=False, max_new_tokens=len(SCRIPTED_PIECES) + 4, temperature=None, top_p=None, top_k=None)
    prompt_len = enc["input_ids"].shape[1]
    return enc["input_ids"][0].tolist(), out[0, prompt_len:].tolist()


def _og_run(out, prompt: str, paths: list, **search) -> tuple[list[int], list[int]]:
    """(prompt ids, generated ids) of og's Generator, run until it stops by itself (eos)."""
    model = og_model(out)
    inputs = og_inputs(out, prompt, [str(p) for p in paths], processor="ours")
    prompt_ids = inputs["input_ids"].as_numpy().reshape(-1).astype(int).tolist()
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt_ids) + len(SCRIPTED_PIECES) + 4, **search)
    generator = og.Generator(model, params)
    generator.set_inputs(inputs)
    tokens = []
    while not generator.is_done():
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    return prompt_ids, tokens


@pytest.mark.parametrize("name", PROMPTS)
def test_transformers_writes_the_script(hf, image_file, name):
    prompt, paths = _prompt(hf, name, image_file)
    _, tokens = _hf_greedy(hf, prompt, paths)
    tokenizer = hf.processor.tokenizer
    assert tokens == scripted_token_ids(tokenizer)[1:], tokenizer.decode(tokens)
    assert tokenizer.decode(tokens[:-1]) == SCRIPTED_OUTPUT and tokens[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")


@pytest.mark.parametrize("name", PROMPTS)
def test_og_generator_gives_transformers_tokens(scripted, hf, image_file, name):
    prompt, paths = _prompt(hf, name, image_file)
    hf_prompt, hf_tokens = _hf_greedy(hf, prompt, paths)
    og_prompt, og_tokens = _og_run(scripted.exported, prompt, paths, do_sample=False)
    assert og_prompt == hf_prompt
    assert og_tokens == hf_tokens


def test_without_thinking_the_answer_is_the_tool_call(scripted, hf):
    """The Thinking prompt with ``enable_thinking=False`` ends with the "\\n\\n" token: the script
    goes on from there."""
    messages, _, _ = PROMPTS["text"]
    prompt = hf.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, enable_thinking=False)
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    _, tokens = _hf_greedy(hf, prompt, [])
    assert hf.processor.tokenizer.decode(tokens) == "<tool_call>" + SCRIPTED_TOOL_JSON + "</tool_call><|im_end|>"
    assert _og_run(scripted.exported, prompt, [], do_sample=False)[1] == tokens


def test_og_samples_the_script_at_the_checkpoint_defaults(scripted, hf, image_file):
    """The next token's logit leads by 30: sampling (genai_config's top_k, top_p, temperature,
    and temperature 1) follows the script too."""
    search = json.loads((scripted.exported / "genai_config.json").read_text())["search"]
    assert search["do_sample"] is True
    prompt, paths = _prompt(hf, "image", image_file)
    expected = scripted_token_ids(hf.processor.tokenizer)[1:]
    for seed, temperature in ((1, search["temperature"]), (2, 1.0)):
        _, tokens = _og_run(scripted.exported, prompt, paths, do_sample=True, random_seed=seed, temperature=temperature)
        assert tokens == expected


def test_og_tokenizer_encodes_and_decodes_as_transformers(scripted, hf, image_file):
    tokenizer = og.Tokenizer(og_model(scripted.exported))
    theirs = hf.processor.tokenizer
    texts = [SCRIPTED_OUTPUT, *SCRIPTED_PIECES, "a\n\n\nb \n\n c", SCRIPTED_OUTPUT + "<|im_end|>\n" + SCRIPTED_OUTPUT]
    texts += [_prompt(hf, name, image_file)[0] for name in PROMPTS]
    for text in texts:
        ids = theirs.encode(text, add_special_tokens=False)
        assert np.asarray(tokenizer.encode(text)).tolist() == ids, text
        assert theirs.decode(ids) == text
        # og's decode leaves out special tokens
        assert tokenizer.decode(ids) == theirs.decode(ids, skip_special_tokens=True), text
    script = scripted_token_ids(theirs)[1:]
    stream = tokenizer.create_stream()
    assert "".join(stream.decode(t) for t in script) == SCRIPTED_OUTPUT
    assert list(tokenizer.eos_token_ids)[0] == script[-1]
