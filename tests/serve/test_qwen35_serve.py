"""A Qwen3.5 export served (a real ``genai-qwen3vl serve`` on 127.0.0.1, the official ``openai``
client): greedy answers equal og's through the stock API, the thinking its template opens comes
back as reasoning, and tool calls forced by ``tool_choice`` are written in Qwen3.5's XML layout and
returned as OpenAI tool calls whose arguments satisfy the tool's schema."""

from __future__ import annotations

import json

import jsonschema
import pytest

from genai_qwen3vl.testing.server import ServerProcess
from genai_qwen3vl.verify.generation import og_generate

PRESET = "q35"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {
                "type": "object",
                # a free string runs on in a random model (it never writes the closing tag): a
                # choice of cities, and an integer
                "properties": {
                    "city": {"type": "string", "enum": ["Paris", "Rome"]},
                    "days": {"type": "integer", "minimum": 1, "maximum": 7},
                },
                "required": ["city", "days"],
            },
        },
    }
]
HELLO = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def q35_client(exported, tmp_path_factory):
    import openai

    with ServerProcess(exported(PRESET), "--model-name", "q35", log_dir=tmp_path_factory.mktemp("q35_logs")) as server:
        yield openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="none", max_retries=0, timeout=120)


def test_greedy_answer_equals_og_and_the_opened_thinking_is_reasoning(q35_client, exported, reference):
    """The template's generation prompt opens <think>: what the model writes up to </think> is
    reasoning, the rest the answer; the same prompt tokens and greedy text as og's."""
    r = q35_client.chat.completions.create(model="q35", messages=HELLO, max_tokens=12, temperature=0, extra_body={"return_token_ids": True})
    ref = reference(PRESET)
    prompt = ref.processor.apply_chat_template(HELLO, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n<think>\n")
    ours = og_generate(exported(PRESET), prompt, [], 12, processor="ours")
    assert r.model_extra["prompt_token_ids"] == ours.prompt_ids
    message = r.choices[0].message
    text = ref.processor.tokenizer.decode([t for t in ours.tokens if t not in ref.spec.tokens.eos_token_ids])
    reasoning, closed, answer = text.partition("</think>")
    assert (message.model_extra.get("reasoning_content") or "") == reasoning
    assert (message.content or "") == (answer.lstrip("\n") if closed else "")


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}], ids=["required", "named"])
def test_forced_tool_calls_are_xml_and_come_back_as_tool_calls(q35_client, choice):
    """With thinking off (the template closes the block), tool_choice holds the answer to Qwen3.5's
    XML call layout; the server reads it back into an OpenAI tool call, its arguments typed by the
    schema (days an integer) and valid against it."""
    for seed in range(3):
        r = q35_client.chat.completions.create(
            model="q35",
            messages=HELLO,
            tools=TOOLS,
            tool_choice=choice,
            temperature=1.0,
            seed=seed,
            max_tokens=200,
            parallel_tool_calls=False,
            extra_body={"chat_template_kwargs": {"enable_thinking": False}},
        )
        choice_out = r.choices[0]
        assert choice_out.finish_reason == "tool_calls", choice_out
        (call,) = choice_out.message.tool_calls
        assert call.function.name == "get_weather"
        arguments = json.loads(call.function.arguments)
        jsonschema.validate(arguments, TOOLS[0]["function"]["parameters"])
        assert isinstance(arguments["days"], int)
