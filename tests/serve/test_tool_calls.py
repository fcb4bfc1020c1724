"""Tool calls read from the generated text in both of Qwen's layouts: Qwen3-VL's JSON and Qwen3.5's
XML (typed by the tool's schema, as vLLM's qwen3_coder parser reads them), through the splitter
that streams them, token piece by token piece."""

import json

import pytest

from genai_qwen3vl.runtime.serve.output import OutputSplitter, parse_call, tool_schemas

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "days": {"type": "integer"},
                    "scale": {"type": "number"},
                    "alerts": {"type": "boolean"},
                    "hours": {"type": "array", "items": {"type": "integer"}},
                    "where": {"type": "object"},
                    "note": {"type": ["string", "null"]},
                },
            },
        },
    }
]
SCHEMAS = tool_schemas(TOOLS)


def _xml(name, **params) -> str:
    body = "".join(f"<parameter={k}>\n{v}\n</parameter>\n" for k, v in params.items())
    return f"\n<function={name}>\n{body}</function>\n"


@pytest.mark.parametrize(
    ("params", "arguments"),
    [
        ({"city": "Paris"}, {"city": "Paris"}),
        ({"city": "  New\nYork "}, {"city": "  New\nYork "}),  # a string as written, inner newlines and spaces kept
        ({"city": "12"}, {"city": "12"}),  # the schema says string: not a number
        ({"days": "3", "scale": "2.5", "alerts": "true"}, {"days": 3, "scale": 2.5, "alerts": True}),
        ({"alerts": "False", "scale": "4"}, {"alerts": False, "scale": 4}),  # the template writes Python's True/False
        ({"hours": "[8, 12]", "where": '{"lat": 1.5}'}, {"hours": [8, 12], "where": {"lat": 1.5}}),
        ({"days": "three"}, {"days": "three"}),  # not an integer: kept as written
        ({"note": "null"}, {"note": None}),
        ({"unknown": "7"}, {"unknown": "7"}),  # not in the schema: text
    ],
)
def test_xml_arguments_are_typed_by_the_schema(params, arguments):
    call = parse_call(_xml("get_weather", **params), SCHEMAS)
    assert call["name"] == "get_weather" and json.loads(call["arguments"]) == arguments


@pytest.mark.parametrize(
    "body",
    [
        "\n<function=get_weather>\nnot a parameter\n</function>\n",  # text outside the parameters
        "\n<function=>\n</function>\n",  # no name
        "\n{not json}\n",
        '\n{"arguments": {}}\n',  # JSON without a name
    ],
)
def test_a_block_in_neither_layout_is_no_call(body):
    assert parse_call(body, SCHEMAS) is None


def test_json_calls_still_parse():
    call = parse_call('\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n', SCHEMAS)
    assert call == {"name": "get_weather", "arguments": '{"city": "Paris"}'}


def _split(text: str, piece: int, tools=TOOLS, opened_think=True) -> list[tuple[str, object]]:
    splitter = OutputSplitter(opened_think, True, tools)
    events = []
    for i in range(0, len(text), piece):
        events += splitter.feed(text[i : i + piece])
    return events + splitter.finish()


@pytest.mark.parametrize("piece", [1, 3, 7, 1000])
def test_the_splitter_streams_reasoning_content_and_xml_calls(piece):
    """Qwen3.5's answer: reasoning (the prompt opened <think>), some content, two calls one line
    apart; whatever the token boundaries, the same events."""
    text = (
        "I should look it up.\n</think>\n\nLet me check.\n\n<tool_call>"
        + _xml("get_weather", city="Paris", days="2")
        + "</tool_call>\n<tool_call>"
        + _xml("get_weather", city="Rome")
        + "</tool_call>"
    )
    events = _split(text, piece)
    reasoning = "".join(v for k, v in events if k == "reasoning")
    content = "".join(v for k, v in events if k == "content")
    calls = [v for k, v in events if k == "tool_call"]
    assert reasoning == "I should look it up.\n" and content == "Let me check."
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [
        ("get_weather", {"city": "Paris", "days": 2}),
        ("get_weather", {"city": "Rome"}),
    ]
