"""The API's features through the official ``openai`` client: reasoning and tool calls (on the
scripted checkpoint, whose greedy answer is known: reasoning, ``</think>``, a tool call), stop
strings, lengths, seeds, per-request image budgets, and the model/health/metrics endpoints."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from genai_qwen3vl.runtime.images import smart_resize
from genai_qwen3vl.testing.tiny import SCRIPTED_REASONING, SCRIPTED_TOOL_JSON

from .conftest import picture_url

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city now",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
CALL = json.loads(SCRIPTED_TOOL_JSON)


@pytest.fixture(scope="module")
def sclient(scripted_server):
    return openai.OpenAI(base_url=f"{scripted_server.base_url}/v1", api_key="none", max_retries=0)


@pytest.fixture(scope="module")
def hf_processor(scripted):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(scripted.checkpoint)


def _hf_prompt_ids(processor, messages, tools=None, **kwargs) -> list[int]:
    text = processor.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=False, **kwargs)
    return processor.tokenizer(text, add_special_tokens=True)["input_ids"]


def _stream(client, **kwargs) -> dict:
    """The streamed answer put together: content, reasoning, tool calls, finish reason, usage."""
    out = {"content": "", "reasoning": "", "calls": {}, "finish": None, "usage": None, "chunks": 0}
    for chunk in client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs):
        out["chunks"] += 1
        out["usage"] = chunk.usage or out["usage"]
        for choice in chunk.choices:
            delta = choice.delta
            out["content"] += delta.content or ""
            out["reasoning"] += (delta.model_extra or {}).get("reasoning_content") or ""
            for call in delta.tool_calls or []:
                slot = out["calls"].setdefault(call.index, {"id": None, "name": "", "arguments": ""})
                slot["id"] = call.id or slot["id"]
                slot["name"] += call.function.name or ""
                slot["arguments"] += call.function.arguments or ""
            out["finish"] = choice.finish_reason or out["finish"]
    return out


def test_reasoning_and_tool_call(sclient, hf_processor):
    r = sclient.chat.completions.create(
        model="qwen3-vl-scripted", messages=ASK, tools=TOOLS, temperature=0, extra_body={"return_token_ids": True}
    )
    choice = r.choices[0]
    assert r.model_extra["prompt_token_ids"] == _hf_prompt_ids(hf_processor, ASK, TOOLS)
    assert choice.message.model_extra["reasoning_content"] == SCRIPTED_REASONING
    assert choice.message.content is None
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == CALL["name"] and json.loads(call.function.arguments) == CALL["arguments"]
    assert r.usage.completion_tokens == len(choice.model_extra["token_ids"]) == 7  # 6 scripted tokens + <|im_end|>

    streamed = _stream(sclient, model="qwen3-vl-scripted", messages=ASK, tools=TOOLS, temperature=0)
    assert streamed["reasoning"] == SCRIPTED_REASONING and streamed["content"] == ""
    assert streamed["finish"] == "tool_calls" and streamed["usage"].completion_tokens == 7
    (scall,) = streamed["calls"].values()
    assert scall["name"] == CALL["name"] and json.loads(scall["arguments"]) == CALL["arguments"]


def test_tool_round_trip(sclient, hf_processor):
    first = sclient.chat.completions.create(model="qwen3-vl-scripted", messages=ASK, tools=TOOLS, temperature=0)
    call = first.choices[0].message.tool_calls[0]
    messages = ASK + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump(include={"id", "type", "function"})]},
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"},
    ]
    second = sclient.chat.completions.create(
        model="qwen3-vl-scripted", messages=messages, tools=TOOLS, temperature=0, extra_body={"return_token_ids": True}
    )
    hf_messages = ASK + [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"type": "function", "function": {"name": CALL["name"], "arguments": CALL["arguments"]}}],
        },
        {"role": "tool", "content": "Sunny, 21 C"},
    ]
    expected = _hf_prompt_ids(hf_processor, hf_messages, TOOLS)
    assert second.model_extra["prompt_token_ids"] == expected
    text = hf_processor.tokenizer.decode(expected)
    assert "<tool_response>\nSunny, 21 C\n</tool_response>" in text and '"arguments": {"city": "Paris"}' in text
    assert second.choices[0].finish_reason == "tool_calls"


def test_without_tools_the_call_stays_text(sclient):
    r = sclient.chat.completions.create(model="qwen3-vl-scripted", messages=ASK, temperature=0)
    assert r.choices[0].message.model_extra["reasoning_content"] == SCRIPTED_REASONING
    assert r.choices[0].message.content == "<tool_call>" + SCRIPTED_TOOL_JSON + "</tool_call>"
    assert r.choices[0].message.tool_calls is None and r.choices[0].finish_reason == "stop"
    none = sclient.chat.completions.create(model="qwen3-vl-scripted", messages=ASK, tools=TOOLS, tool_choice="none", temperature=0)
    assert none.choices[0].message.tool_calls is None and none.choices[0].message.content.startswith("<tool_call>")


def test_enable_thinking_false_through_chat_template_kwargs(sclient, hf_processor):
    r = sclient.chat.completions.create(
        model="qwen3-vl-scripted",
        messages=ASK,
        tools=TOOLS,
        temperature=0,
        extra_body={"chat_template_kwargs": {"enable_thinking": False}, "return_token_ids": True},
    )
    assert r.model_extra["prompt_token_ids"] == _hf_prompt_ids(hf_processor, ASK, TOOLS, enable_thinking=False)
    assert "reasoning_content" not in r.choices[0].message.model_extra  # the template closed thinking: no reasoning
    assert r.choices[0].finish_reason == "tool_calls" and r.choices[0].message.tool_calls[0].function.name == CALL["name"]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_stop_string(sclient, stream):
    kwargs = dict(model="qwen3-vl-scripted", messages=ASK, temperature=0, stop=["in Paris", "never"])
    if stream:
        out = _stream(sclient, **kwargs)
        reasoning, finish, tokens = out["reasoning"], out["finish"], out["usage"].completion_tokens
    else:
        r = sclient.chat.completions.create(**kwargs)
        reasoning, finish, tokens = (
            r.choices[0].message.model_extra["reasoning_content"],
            r.choices[0].finish_reason,
            r.usage.completion_tokens,
        )
    assert reasoning == SCRIPTED_REASONING[: SCRIPTED_REASONING.index("in Paris")]
    assert finish == "stop" and tokens == 1  # the first token holds the stop string: generation ends there


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_max_tokens_gives_length(client, stream):
    model = client.models.list().data[0].id
    for key in ("max_tokens", "max_completion_tokens"):
        kwargs = dict(model=model, messages=[{"role": "user", "content": "Write a poem."}], temperature=0, **{key: 3})
        if stream:
            out = _stream(client, **kwargs)
            assert out["finish"] == "length" and out["usage"].completion_tokens == 3
        else:
            r = client.chat.completions.create(**kwargs)
            assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 3
            assert r.usage.total_tokens == r.usage.prompt_tokens + 3


def test_seed_reproducibility(client):
    model = client.models.list().data[0].id

    def sample(seed):
        r = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Write a poem."}],
            max_tokens=16,
            temperature=1.0,
            top_p=1.0,
            seed=seed,
            extra_body={"return_token_ids": True, "top_k": 0},
        )
        return r.choices[0].model_extra["token_ids"]

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)
    greedy = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Write a poem."}],
        max_tokens=16,
        temperature=0,
        extra_body={"return_token_ids": True},
    )
    assert sample(7) != greedy.choices[0].model_extra["token_ids"]  # sampling really sampled


def test_mm_processor_kwargs_set_the_image_budget_and_fps(client, served):
    """Per request, as vLLM names them: the image gets smart_resize's grid for that budget."""
    model = client.models.list().data[0].id
    h, w = 300, 420

    def prompt_tokens(mm=None):
        body = {
            "model": model,
            "max_tokens": 1,
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": picture_url(h, w, 5)}}, {"type": "text", "text": "Describe."}],
                }
            ],
        }
        if mm:
            body["mm_processor_kwargs"] = mm
        r = httpx.post(f"{served.base_url}/v1/chat/completions", json=body, timeout=60)
        assert r.status_code == 200, r.text
        return r.json()["usage"]["prompt_tokens"]

    default = prompt_tokens()
    small_budget = 32 * 32 * 12
    small = prompt_tokens({"max_pixels": small_budget, "min_pixels": 32 * 32 * 4})
    nh, nw = smart_resize(h, w, 32, 32 * 32 * 4, small_budget)
    (oh, ow) = smart_resize(h, w, 32, *_limits(served))
    assert default - small == (oh // 32) * (ow // 32) - (nh // 32) * (nw // 32) > 0


def _limits(served) -> tuple[int, int]:
    cfg = json.loads((served_model_dir(served) / "preprocessor_config.json").read_text())
    return cfg["size"]["shortest_edge"], cfg["size"]["longest_edge"]


def served_model_dir(served):
    return __import__("pathlib").Path(served.proc.args[3])


def test_models_health_metrics(client, served):
    models = client.models.list()
    assert [m.id for m in models.data] == [served_model_dir(served).name]
    assert client.models.retrieve(models.data[0].id).id == models.data[0].id
    health = httpx.get(f"{served.base_url}/health").json()
    assert health["status"] == "ok"
    client.chat.completions.create(model=models.data[0].id, messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    text = httpx.get(f"{served.base_url}/metrics").text
    for name in (
        "genai_qwen3vl_requests_total",
        "genai_qwen3vl_queue_length",
        "genai_qwen3vl_prompt_tokens_total",
        "genai_qwen3vl_generation_tokens_total",
        "genai_qwen3vl_time_to_first_token_seconds_bucket",
        "genai_qwen3vl_decode_tokens_per_second_bucket",
        "genai_qwen3vl_running",
    ):
        assert name in text, name
    assert 'genai_qwen3vl_requests_total{path="/v1/chat/completions",status="200"}' in text
