"""The tiny checkpoints' chat templates (Qwen3-VL Instruct's and Thinking's structure): what they
write for tools, tool calls and tool responses, and our renderer (and og's tokenizer) giving
exactly what transformers' processor gives."""

import json

import pytest

from genai_qwen3vl.runtime.chat_template import find_chat_template, render_chat_template

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    },
    {"type": "function", "function": {"name": "clock", "description": "¿Qué hora es?", "parameters": {"type": "object", "properties": {}}}},
]
_CALLS = [
    {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},  # arguments as a dict
    {"type": "function", "function": {"name": "clock", "arguments": '{"tz": "CET"}'}},  # as a JSON string
]
TOOL_TURNS = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": [{"type": "image", "image": "x.png"}, {"type": "text", "text": "Weather here, and the time?"}]},
    {"role": "assistant", "content": "<think>\nThe user asks.\n</think>\n\nLet me check.", "tool_calls": _CALLS},
    {"role": "tool", "content": '{"temp": 21}'},
    {"role": "tool", "content": [{"type": "text", "text": "12:00"}]},
    {"role": "assistant", "content": [{"type": "text", "text": "21 degrees at noon."}]},
    {"role": "user", "content": [{"type": "video", "video": "v.mp4"}, {"type": "text", "text": "And here?"}]},
]
# (messages, tools)
CASES = {
    "text": ([{"role": "user", "content": "Hi"}], None),
    "system": ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], None),
    "system_parts_and_tools": (
        [
            {"role": "system", "content": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": " Very."}]},
            {"role": "user", "content": "Weather?"},
        ],
        TOOLS,
    ),
    "tools_without_system": ([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where?"}]}], TOOLS),
    "tool_calls_and_responses": (TOOL_TURNS, TOOLS),
    "tool_call_without_content": (
        [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": "", "tool_calls": _CALLS[:1]},
            {"role": "tool", "content": "sunny"},
        ],
        TOOLS,
    ),
    "multi_turn_images": (
        [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "a.png"}}, {"type": "text", "text": "A?"}]},
            {"role": "assistant", "content": "<think>\nr\n</think>\n\nB."},
            {"role": "system", "content": "Later system."},
            {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "C?"}]},
        ],
        None,
    ),
}
OPTIONS = {"plain": {}, "vision_ids": {"add_vision_id": True}, "no_thinking": {"enable_thinking": False}}


@pytest.fixture(scope="module")
def processors(checkpoints, scripted_checkpoint):
    """template name -> (checkpoint, transformers processor): the awkward preset (Instruct) and the
    scripted checkpoint (Thinking)."""
    from transformers import AutoProcessor

    folders = {"instruct": checkpoints("awkward"), "thinking": scripted_checkpoint, "qwen3_5": checkpoints("q35")}
    return {name: (folder, AutoProcessor.from_pretrained(folder)) for name, folder in folders.items()}


def _rendered(render) -> str | tuple[str, str]:
    """What ``render()`` returns, or (the exception's type, its message) where the template refuses."""
    try:
        return render()
    except Exception as exc:  # noqa: BLE001 - whatever the template raises, both renderers must agree on it
        return type(exc).__name__, str(exc)


@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("template", ["instruct", "thinking", "qwen3_5"])
def test_render_equals_transformers(processors, template, case, option):
    """The same text, or the same refusal (Qwen3.5's template refuses a system message after the
    first and arguments given as a string)."""
    folder, processor = processors[template]
    messages, tools = CASES[case]
    theirs = _rendered(
        lambda: processor.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=False, **OPTIONS[option])
    )
    ours = _rendered(lambda: render_chat_template(find_chat_template(folder), messages, True, tools=tools, **OPTIONS[option]))
    assert ours == theirs
    without_prompt = _rendered(lambda: processor.apply_chat_template(messages, tools=tools, add_generation_prompt=False, tokenize=False))
    assert _rendered(lambda: render_chat_template(find_chat_template(folder), messages, False, tools=tools)) == without_prompt
    if template != "qwen3_5":
        assert isinstance(theirs, str), theirs


def test_qwen35_tool_conversation_reads_as_qwen_writes_it(processors):
    """Qwen3.5's layout, pinned: the tools before the system text, XML calls (a string argument as
    written, others as JSON), the reasoning of the answer after the last question kept, the
    generation prompt opening the thinking block."""
    folder, _ = processors["qwen3_5"]
    calls = [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 3, "when": ["am", "pm"]}}},
        {"type": "function", "function": {"name": "clock", "arguments": {}}},
    ]
    turns = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Weather here, and the time? "}]},
        {"role": "assistant", "content": "Let me check.", "reasoning_content": "The user asks.", "tool_calls": calls},
        {"role": "tool", "content": '{"temp": 21}'},
        {"role": "tool", "content": "12:00"},
    ]
    text = render_chat_template(find_chat_template(folder), turns, True, tools=TOOLS[:1])
    assert text == (
        "<|im_start|>system\n# Tools\n\nYou have access to the following functions:\n\n<tools>\n"
        f"{json.dumps(TOOLS[0], ensure_ascii=False)}\n</tools>\n\n"
        "If you choose to call a function ONLY reply in the following format with NO suffix:\n\n"
        "<tool_call>\n<function=example_function_name>\n<parameter=example_parameter_1>\nvalue_1\n</parameter>\n"
        "<parameter=example_parameter_2>\nThis is the value for the second parameter\nthat can span\nmultiple lines\n</parameter>\n"
        "</function>\n</tool_call>\n\n<IMPORTANT>\nReminder:\n"
        "- Function calls MUST follow the specified format: an inner <function=...></function> block must be nested within "
        "<tool_call></tool_call> XML tags\n- Required parameters MUST be specified\n"
        "- You may provide optional reasoning for your function call in natural language BEFORE the function call, but NOT after\n"
        "- If there is no function call available, answer the question like normal with your current knowledge and do not tell "
        "the user about function calls\n</IMPORTANT>\n\nBe brief.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Weather here, and the time?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\nThe user asks.\n</think>\n\nLet me check.\n\n"
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n<parameter=days>\n3\n</parameter>\n"
        '<parameter=when>\n["am", "pm"]\n</parameter>\n</function>\n</tool_call>\n'
        "<tool_call>\n<function=clock>\n</function>\n</tool_call><|im_end|>\n"
        '<|im_start|>user\n<tool_response>\n{"temp": 21}\n</tool_response>\n<tool_response>\n12:00\n</tool_response><|im_end|>\n'
        "<|im_start|>assistant\n<think>\n"
    )
    closed = render_chat_template(find_chat_template(folder), turns[:2], True, enable_thinking=False)
    assert closed.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_instruct_tool_conversation_reads_as_qwen_writes_it(processors):
    folder, _ = processors["instruct"]
    text = render_chat_template(find_chat_template(folder), TOOL_TURNS, True, tools=TOOLS, add_vision_id=True)
    tools = "\n".join(json.dumps(t, ensure_ascii=False) for t in TOOLS)
    assert text == (
        "<|im_start|>system\nBe brief.\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        f"You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{tools}\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n"
        '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\nPicture 1: <|vision_start|><|image_pad|><|vision_end|>Weather here, and the time?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\nThe user asks.\n</think>\n\nLet me check.\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "clock", "arguments": {"tz": "CET"}}\n</tool_call><|im_end|>\n'
        '<|im_start|>user\n<tool_response>\n{"temp": 21}\n</tool_response>\n<tool_response>\n12:00\n</tool_response><|im_end|>\n'
        "<|im_start|>assistant\n21 degrees at noon.<|im_end|>\n"
        "<|im_start|>user\nVideo 1: <|vision_start|><|video_pad|><|vision_end|>And here?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_thinking_drops_earlier_reasoning_and_opens_the_answer(processors):
    folder, _ = processors["thinking"]
    template = find_chat_template(folder)
    messages, _ = CASES["multi_turn_images"]
    text = render_chat_template(template, messages, True)
    assert "<|im_start|>assistant\nB.<|im_end|>\n" in text and "\nr\n" not in text
    assert text.endswith("<|im_start|>assistant\n<think>\n")
    assert render_chat_template(template, messages, True, enable_thinking=True).endswith("<|im_start|>assistant\n<think>\n")
    assert render_chat_template(template, messages, True, enable_thinking=False).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    # without reasoning in it, an answer stays as it is
    plain = [{"role": "user", "content": "A"}, {"role": "assistant", "content": "\nB"}]
    assert "<|im_start|>assistant\n\nB<|im_end|>" in render_chat_template(template, plain, False)
    # the tool call after a reasoning-only answer opens the turn (no newline before it)
    call = [{"role": "user", "content": "A"}, {"role": "assistant", "content": "<think>\nr\n</think>\n\n", "tool_calls": _CALLS[:1]}]
    assert "<|im_start|>assistant\n<tool_call>\n" in render_chat_template(template, call, False)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("template", ["instruct", "thinking"])
def test_og_tokenizer_renders_as_transformers(processors, exported, scripted, template, case):
    """og's own template engine (what ``chat --processor stock`` uses) on the exported folders.
    It takes no extra template variables, so only the plain rendering is compared."""
    import onnxruntime_genai as og

    from genai_qwen3vl.verify.generation import og_model

    out = exported("awkward") if template == "instruct" else scripted.exported
    _, processor = processors[template]
    messages, tools = CASES[case]
    theirs = processor.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=False)
    tokenizer = og.Tokenizer(og_model(out))
    assert tokenizer.apply_chat_template(json.dumps(messages), tools=json.dumps(tools) if tools else None) == theirs
