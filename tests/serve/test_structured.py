"""Structured output through the official ``openai`` client: JSON schemas (OpenAI's
``response_format`` and vLLM's ``structured_outputs``), regexes, choices, grammars and forced tool
calls, on a tiny random checkpoint whose free answers are garbage, judged by ``jsonschema``;
hostile schemas; and on the scripted Thinking checkpoint, reasoning left free and greedy tokens
unchanged by a constraint that admits them."""

from __future__ import annotations

import json
import re
from typing import Annotated, Literal

import httpx
import jsonschema
import openai
import pydantic
import pytest

from genai_qwen3vl.testing.scripted import SCRIPTED_REASONING

from .test_api import ASK, TOOLS, _stream
from .test_hostile import assert_error, assert_still_serving

HELLO = [{"role": "user", "content": "Describe the weather as JSON."}]
SEEDS = (0, 1, 2)
MAX_TOKENS = 160
# each ends within MAX_TOKENS whatever a random model writes: strings, numbers and arrays bounded
SCHEMAS = {
    "nested_objects": {
        "type": "object",
        "properties": {
            "place": {
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 6}, "zip": {"type": "integer", "minimum": 1000, "maximum": 9999}},
                "required": ["city", "zip"],
                "additionalProperties": False,
            },
            "sunny": {"type": "boolean"},
        },
        "required": ["place", "sunny"],
        "additionalProperties": False,
    },
    "bounded_array": {
        "type": "object",
        "properties": {
            "temps": {"type": "array", "items": {"type": "integer", "minimum": -40, "maximum": 50}, "minItems": 2, "maxItems": 4}
        },
        "required": ["temps"],
        "additionalProperties": False,
    },
    "enum": {"type": "string", "enum": ["sunny", "rain", "snow", "fog and mist"]},
    "optional_keys": {
        "type": "object",
        "properties": {
            "a": {"type": "integer", "minimum": 0, "maximum": 9},
            "b": {"type": "string", "maxLength": 3},
            "c": {"type": "null"},
        },
        "required": ["a"],
        "additionalProperties": False,
    },
    "number_ranges": {
        "type": "object",
        "properties": {
            "celsius": {"type": "integer", "minimum": -30, "maximum": 45},
            "wind": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 200},
            "rain": {"type": "number", "minimum": 0, "maximum": 1, "multipleOf": 0.25},
        },
        "required": ["celsius", "wind", "rain"],
        "additionalProperties": False,
    },
    "string_pattern": {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"}, "day": {"type": "string", "format": "date"}},
        "required": ["code", "day"],
        "additionalProperties": False,
    },
}
WEATHER_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 8}, "unit": {"enum": ["C", "F"]}},
                "required": ["city", "unit"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "add",
            "parameters": {
                "type": "object",
                "properties": {
                    "a": {"type": "integer", "minimum": 0, "maximum": 99},
                    "b": {"type": "integer", "minimum": 0, "maximum": 99},
                },
                "required": ["a", "b"],
                "additionalProperties": False,
            },
        },
    },
]
PARAMETERS = {tool["function"]["name"]: tool["function"]["parameters"] for tool in WEATHER_TOOLS}


@pytest.fixture(scope="module")
def model(client) -> str:
    return client.models.list().data[0].id


@pytest.fixture(scope="module")
def sclient(scripted_server):
    return openai.OpenAI(base_url=f"{scripted_server.base_url}/v1", api_key="none", max_retries=0)


def _answer(client, stream: bool, **kwargs) -> tuple[str, str | None]:
    """(content, finish reason), streamed or not."""
    if stream:
        out = _stream(client, **kwargs)
        return out["content"], out["finish"]
    r = client.chat.completions.create(**kwargs)
    return r.choices[0].message.content, r.choices[0].finish_reason


def _valid(text: str, schema: dict) -> bool:
    try:
        jsonschema.validate(json.loads(text), schema, format_checker=jsonschema.FormatChecker())
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("name", list(SCHEMAS))
def test_every_answer_validates_against_its_schema(client, model, name, stream):
    schema = SCHEMAS[name]
    for seed in SEEDS:
        # OpenAI's response_format and vLLM's structured_outputs take turns
        if seed % 2:
            how = {"extra_body": {"structured_outputs": {"json": schema}}}
        else:
            how = {"response_format": {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}}
        content, finish = _answer(client, stream, model=model, messages=HELLO, max_tokens=MAX_TOKENS, temperature=1.0, seed=seed, **how)
        assert finish == "stop", (seed, content)
        jsonschema.validate(json.loads(content), schema, format_checker=jsonschema.FormatChecker())


def test_without_the_constraint_the_same_requests_do_not_validate(client, model):
    """The negative control: the tiny random checkpoint's free answers to the same requests are
    not valid, so the constraint is what makes them valid."""
    valid = []
    for name, schema in SCHEMAS.items():
        for seed in SEEDS:
            r = client.chat.completions.create(model=model, messages=HELLO, max_tokens=MAX_TOKENS, temperature=1.0, seed=seed)
            valid += [(name, seed)] if _valid(r.choices[0].message.content, schema) else []
    assert valid == []


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_json_object_is_one_json_object(client, model, stream):
    # an open object lets a random model add keys until max_tokens: what is checked is that every
    # answer that ended is an object, and that the answers that were cut are an object's prefix
    for seed in SEEDS:
        content, finish = _answer(
            client,
            stream,
            model=model,
            messages=HELLO,
            max_tokens=MAX_TOKENS,
            temperature=1.0,
            seed=seed,
            response_format={"type": "json_object"},
        )
        assert content.startswith("{")
        if finish == "stop":
            assert isinstance(json.loads(content), dict)


class Reading(pydantic.BaseModel):
    station: Annotated[str, pydantic.Field(max_length=6)]
    celsius: Annotated[int, pydantic.Field(ge=-30, le=45)]
    sky: Literal["clear", "cloudy"]
    ok: bool


def test_the_openai_client_parse_returns_the_pydantic_object(client, model):
    for seed in SEEDS:
        r = client.chat.completions.parse(
            model=model, messages=HELLO, max_tokens=MAX_TOKENS, temperature=1.0, seed=seed, response_format=Reading
        )
        parsed = r.choices[0].message.parsed
        assert isinstance(parsed, Reading) and Reading.model_validate_json(r.choices[0].message.content) == parsed


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_regex_choice_and_grammar_answers(client, model, stream):
    regex = r"[0-9]{3}-[a-z]{2}( ok)?"
    choices = ["yes", "no", 'a "quoted" answer', "two\nlines"]
    grammar = 'start: "x" start | "y" "z"*'
    for seed in SEEDS:
        common = dict(model=model, messages=HELLO, max_tokens=40, temperature=1.0, seed=seed)
        content, _ = _answer(client, stream, extra_body={"structured_outputs": {"regex": regex}}, **common)
        assert re.fullmatch(regex, content), content
        content, _ = _answer(client, stream, extra_body={"structured_outputs": {"choice": choices}}, **common)
        assert content in choices
        content, finish = _answer(client, stream, extra_body={"structured_outputs": {"grammar": grammar}}, **common)
        assert re.fullmatch(r"x*(yz*)?", content) and (finish == "length" or re.fullmatch("x*yz*", content)), content


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_forced_tool_calls_have_valid_arguments(client, model, stream):
    named = {"type": "function", "function": {"name": "add"}}
    for seed in SEEDS:
        for choice in ("required", named):
            kwargs = dict(
                model=model, messages=HELLO, max_tokens=MAX_TOKENS, temperature=1.0, seed=seed, tools=WEATHER_TOOLS, tool_choice=choice
            )
            kwargs["parallel_tool_calls"] = seed != 2  # one call, or one or more
            if stream:
                out = _stream(client, **kwargs)
                calls, finish = [(c["name"], c["arguments"]) for c in out["calls"].values()], out["finish"]
            else:
                r = client.chat.completions.create(**kwargs)
                calls = [(c.function.name, c.function.arguments) for c in r.choices[0].message.tool_calls or []]
                finish = r.choices[0].finish_reason
            assert finish == "tool_calls" and calls, (seed, choice, calls)
            assert kwargs["parallel_tool_calls"] or len(calls) == 1
            for name, arguments in calls:
                assert choice == "required" or name == "add"
                jsonschema.validate(json.loads(arguments), PARAMETERS[name])


HOSTILE = {
    # name: (what the request adds, words the 400 names)
    "recursive": (
        {"response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": {"$ref": "#"}}}},
        "no finite instance",
    ),
    "recursive_required": (
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "r", "schema": {"type": "object", "properties": {"a": {"$ref": "#"}}, "required": ["a"]}},
            }
        },
        "no finite instance",
    ),
    "enormous_enum": ({"structured_outputs": {"json": {"enum": [f"value number {i}" for i in range(20000)]}}}, "at most"),
    "invalid_schema": (
        {"structured_outputs": {"json": {"type": "object", "properties": {"a": {"minimum": "zero"}}}}},
        "not a valid JSON Schema",
    ),
    "unsatisfiable_schema": ({"structured_outputs": {"json": {"type": "integer", "minimum": 5, "maximum": 1}}}, "minimum"),
    "lookaround_pattern": ({"structured_outputs": {"json": {"type": "string", "pattern": "(?=a)b"}}}, "look-around"),
    "regex_matching_nothing": ({"structured_outputs": {"regex": "[^\\s\\S]"}}, "matches nothing"),
    "regex_not_parsing": ({"structured_outputs": {"regex": "a(("}}, "unclosed group"),
    "grammar_not_parsing": ({"structured_outputs": {"grammar": "start: ((("}}, "Expected"),
    "grammar_unknown_rule": ({"structured_outputs": {"grammar": "start: missing"}}, "unknown name"),
    "two_kinds": ({"structured_outputs": {"regex": "a", "choice": ["a"]}}, "exactly one"),
    "format_and_forced_call": (
        {"response_format": {"type": "json_object"}, "tools": WEATHER_TOOLS, "tool_choice": "required"},
        "cannot both hold",
    ),
    "tool_with_invalid_parameters": (
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 7}}}], "tool_choice": "required"},
        "not a valid JSON Schema",
    ),
    "schema_not_an_object": ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": [1]}}}, "JSON Schema"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_constraints_get_a_400_and_the_next_request_is_served(served, case):
    extra, words = HOSTILE[case]
    body = {"messages": HELLO, "max_tokens": 4, **extra}
    r = httpx.post(f"{served.base_url}/v1/chat/completions", json=body, timeout=60)
    error = assert_error(r, 400, None, words)
    assert error["param"] in ("response_format", "structured_outputs", "tool_choice", "tools")
    assert_still_serving(served.base_url)


# ---------------------------------------------------------------------- the scripted checkpoint
STRICT_TOOLS = [{**TOOLS[0], "function": {**TOOLS[0]["function"], "strict": True}}]


def _tokens(sclient, **kwargs) -> tuple[list[int], object]:
    r = sclient.chat.completions.create(
        model="qwen3-vl-scripted", messages=ASK, temperature=0, max_tokens=40, extra_body={"return_token_ids": True}, **kwargs
    )
    return r.choices[0].model_extra["token_ids"], r.choices[0].message


def test_a_constraint_that_admits_the_greedy_answer_leaves_its_tokens_alone(sclient):
    """The scripted checkpoint's greedy answer: reasoning, </think>, a get_weather call with
    {"city": "Paris"}. Forcing that call (required, named, a strict tool under auto, a response
    format beside the tools) admits it: the tokens are the unconstrained run's, token for token."""
    free, message = _tokens(sclient, tools=TOOLS)
    assert message.tool_calls[0].function.name == "get_weather"
    for kwargs in (
        {"tools": TOOLS, "tool_choice": "required"},
        {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
        {"tools": STRICT_TOOLS, "tool_choice": "auto"},
        {"tools": TOOLS, "response_format": {"type": "json_object"}},
    ):
        tokens, message = _tokens(sclient, **kwargs)
        assert tokens == free, kwargs
        assert message.model_extra["reasoning_content"] == SCRIPTED_REASONING
        assert json.loads(message.tool_calls[0].function.arguments) == {"city": "Paris"}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_thinking_stays_free_and_the_answer_is_constrained(sclient, stream):
    schema = {"type": "object", "properties": {"sunny": {"type": "boolean"}}, "required": ["sunny"], "additionalProperties": False}
    kwargs = dict(model="qwen3-vl-scripted", messages=ASK, temperature=0, max_tokens=40)
    kwargs["response_format"] = {"type": "json_schema", "json_schema": {"name": "w", "schema": schema}}
    if stream:
        out = _stream(sclient, **kwargs)
        reasoning, content = out["reasoning"], out["content"]
    else:
        message = sclient.chat.completions.create(**kwargs).choices[0].message
        reasoning, content = message.model_extra.get("reasoning_content"), message.content
    assert reasoning == SCRIPTED_REASONING  # the script's reasoning, as without the constraint
    jsonschema.validate(json.loads(content), schema)
    # enable_thinking false: the template closes thinking in the prompt; only the answer exists
    kwargs["extra_body"] = {"chat_template_kwargs": {"enable_thinking": False}}
    message = sclient.chat.completions.create(**{**kwargs, "stream": False}).choices[0].message
    assert "reasoning_content" not in message.model_extra
    jsonschema.validate(json.loads(message.content), schema)
