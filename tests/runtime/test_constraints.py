"""Structured output in the runtime tier: the grammars given to og (runtime/constraints.py), the
checks before og sees them, og's own guidance through the generation primitive, and the chat
command's --json-schema / --regex / --choice."""

from __future__ import annotations

import functools
import json
import re

import jsonschema
import onnxruntime_genai as og
import pytest

from genai_qwen3vl.model.folder import ExportedFolder
from genai_qwen3vl.runtime.constraints import MAX_CHARS, Constraint, ConstraintChecker, ConstraintError, _finite
from genai_qwen3vl.runtime.generate import TokenStream
from genai_qwen3vl.runtime.processor import Qwen3VLProcessor

from .test_chat import run_chat

TOOL = {
    "type": "function",
    "function": {
        "name": "set_alarm",
        "strict": True,
        "parameters": {"type": "object", "properties": {"hour": {"type": "integer", "minimum": 0, "maximum": 23}}, "required": ["hour"]},
    },
}


# ---------------------------------------------------------------------- without a model
@pytest.mark.parametrize(
    "schema, finite",
    [
        ({"type": "object", "properties": {"a": {"$ref": "#"}}}, True),  # "a" optional: {} ends it
        ({"type": "object", "properties": {"a": {"$ref": "#"}}, "required": ["a"]}, False),
        ({"$ref": "#"}, False),
        ({"$defs": {"n": {"type": "array", "items": {"$ref": "#/$defs/n"}}}, "$ref": "#/$defs/n"}, True),  # [] ends it
        ({"$defs": {"n": {"type": "array", "items": {"$ref": "#/$defs/n"}, "minItems": 1}}, "$ref": "#/$defs/n"}, False),
        ({"$defs": {"n": {"anyOf": [{"type": "integer"}, {"$ref": "#/$defs/m"}]}, "m": {"$ref": "#/$defs/n"}}, "$ref": "#/$defs/m"}, True),
        ({"type": "object", "properties": {"a": {"allOf": [{"$ref": "#"}]}}, "required": ["a"]}, False),
        ({"type": ["object", "null"], "properties": {"a": {"$ref": "#"}}, "required": ["a"]}, True),  # null ends it
        ({"properties": {"a": {"$ref": "#"}}, "required": ["a"]}, True),  # untyped: a number is an instance
        (True, True),
    ],
)
def test_a_schema_is_finite_when_some_instance_ends(schema, finite):
    assert _finite(schema) is finite


def test_names_are_kept_apart_outside_strings_regexes_comments_and_json():
    grammar = Constraint.grammar('start: "start" /start/ answer // start\nanswer: start | "x" # start\n')
    assert grammar.rules == (
        'answer: gq_user_start\ngq_user_start: "start" /start/ gq_user_answer // start\ngq_user_answer: gq_user_start | "x" # start\n'
    )
    union = Constraint.json_schema({"properties": {"answer": {"const": "gq_call"}}}) | Constraint.choice(["answer"])
    assert union.rules.startswith("answer: gq_a | gq_b\ngq_a: %json {")
    assert '{"answer": {"const": "gq_call"}}' in union.rules and 'gq_b: "answer"' in union.rules


def test_og_is_given_one_lark_grammar_without_forcing_composed_after_thinking():
    kind, text = Constraint.regex("[0-9]+").guidance()
    assert kind == "lark_grammar" and text.startswith('%llguidance {"no_forcing": true}\nstart: answer\n')
    _, thinking = Constraint.regex("[0-9]+").guidance(thinking=True)
    assert 'start: gq_thinking gq_gap? answer\ngq_thinking[suffix="</think>"]' in thinking
    _, text = Constraint.json_schema({"type": "object", "x-guidance": {"whitespace_flexible": True}}).guidance()
    layout = json.loads(text.split("%json ", 1)[1])["x-guidance"]  # the schema's own options win over ours
    assert layout == {"whitespace_flexible": True, "item_separator": ", ", "key_separator": ": "}


@pytest.fixture(scope="module")
def checker(exported) -> ConstraintChecker:
    return ConstraintChecker.for_folder(ExportedFolder.open(exported("awkward")))


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: Constraint.json_schema("{not json"), "not valid JSON"),
        (lambda: Constraint.json_schema({"type": "string", "format": "colour"}), "Unknown format"),
        (lambda: Constraint.json_schema({"enum": ["x" * 100] * (MAX_CHARS // 100)}), f"at most {MAX_CHARS}"),
        (lambda: Constraint.regex("(a|b"), "regex"),
        (lambda: Constraint.regex("\\b[0-9]"), "look"),
        (lambda: Constraint.regex("x[^\\s\\S]"), "matches nothing"),
        (lambda: Constraint.choice([]), "non-empty list"),
        (lambda: Constraint.grammar('%llguidance {}\nstart: "a"'), "%llguidance"),
        (lambda: Constraint.grammar("start: a\na: a"), "matches nothing"),
        (lambda: Constraint.tool_calls([TOOL], ["other"]), "not among the tools"),
    ],
)
def test_what_cannot_hold_an_answer_is_one_clear_error(checker, make, words):
    with pytest.raises(ConstraintError) as raised:
        checker.check(make())
    assert words in str(raised.value) and "Traceback" not in str(raised.value)


def test_verdicts_are_cached_by_the_constraints_text(checker):
    schema = {"type": "object", "properties": {"cached": {"type": "boolean"}}}
    checker.verdict.cache_clear()
    checker.check(Constraint.json_schema(schema))
    checker.check(Constraint.json_schema(json.dumps(schema)))  # the same text: no second compile
    info = checker.verdict.cache_info()
    assert (info.misses, info.hits) == (1, 1)


# ---------------------------------------------------------------------- through og
@functools.cache
def _loaded(folder) -> tuple[og.Model, Qwen3VLProcessor]:
    return og.Model(str(folder)), Qwen3VLProcessor(folder)


def _generate(folder, constraint: Constraint | None, seed: int, steps: int = 48) -> str:
    model, processor = _loaded(folder)
    prompt = processor.apply_chat_template([{"role": "user", "content": "Answer, please."}])
    inputs = processor.process(prompt)
    search = {"max_length": int(inputs.input_ids.shape[1]) + steps, "do_sample": True, "temperature": 1.0, "random_seed": seed}
    guidance = constraint.guidance() if constraint is not None else None
    with TokenStream(model, inputs.og_arrays(), search, guidance=guidance) as stream:
        tokens = list(stream)
    eos = set(ExportedFolder.open(folder).eos_token_ids)
    return processor.tokenizer.decode([t for t in tokens if t not in eos])


def test_the_generation_primitive_holds_sampled_answers_to_the_constraint(exported, checker):
    folder = exported("awkward")
    regex = r"[A-Z][a-z]{1,5}, [0-9]{2}"
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 99}},
        "required": ["n"],
        "additionalProperties": False,
    }
    free = [_generate(folder, None, seed) for seed in range(3)]
    assert not any(re.fullmatch(regex, text) for text in free)  # the constraint is what does it
    for seed in range(3):
        assert re.fullmatch(regex, _generate(folder, Constraint.regex(regex), seed))
        jsonschema.validate(json.loads(_generate(folder, Constraint.json_schema(schema), seed)), schema)
        calls = _generate(folder, Constraint.tool_calls([TOOL], parallel=False), seed, steps=120)
        body = calls.removeprefix("<tool_call>\n").removesuffix("\n</tool_call>")
        assert calls == f"<tool_call>\n{body}\n</tool_call>" and json.loads(body)["name"] == "set_alarm"
        jsonschema.validate(json.loads(body)["arguments"], TOOL["function"]["parameters"])


def test_a_union_admits_either_answer(exported):
    union = Constraint.choice(["no"]) | Constraint.regex("[0-9]{4}")
    answers = {_generate(exported("awkward"), union, seed, steps=8) for seed in range(6)}
    assert answers and all(a == "no" or re.fullmatch("[0-9]{4}", a) for a in answers), answers


# ---------------------------------------------------------------------- the chat command
def test_chat_flags_hold_the_answer(exported, tmp_path):
    out = exported("awkward")
    proc = run_chat(out, "-p", "Yes or no?", "--choice", "yes,no,maybe", "--temperature", "1", "--max_length", 200)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("Assistant: ", 1)[1].strip() in ("yes", "no", "maybe")
    proc = run_chat(out, "-p", "A code?", "--regex", "[0-9]{3}-[a-z]{2}", "--greedy", "--max_length", 200)
    assert proc.returncode == 0 and re.fullmatch("[0-9]{3}-[a-z]{2}", proc.stdout.split("Assistant: ", 1)[1].strip()), proc.stdout
    schema_file = tmp_path / "schema.json"
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": False}
    schema_file.write_text(json.dumps(schema))
    proc = run_chat(out, "-p", "JSON?", "--json-schema", schema_file, "--greedy", "--max_length", 200)
    assert proc.returncode == 0, proc.stderr
    jsonschema.validate(json.loads(proc.stdout.split("Assistant: ", 1)[1]), schema)


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--regex", "a(("], "--regex: "),
        (["--json-schema", "missing.json"], "--json-schema: cannot read missing.json"),
        (["--choice", ","], "--choice: the choices must be a non-empty list"),
    ],
)
def test_chat_flags_refuse_what_cannot_hold_an_answer_in_one_line(exported, flags, words):
    proc = run_chat(exported("awkward"), "-p", "Hi", *flags)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_chat_regex_error_names_the_problem(exported):
    proc = run_chat(exported("awkward"), "-p", "Hi", "--regex", "[^\\s\\S]")
    assert proc.returncode == 2 and "matches nothing" in proc.stderr, proc.stderr


XML_TOOLS = [
    TOOL,
    {
        "type": "function",
        "function": {
            "name": "note",
            "parameters": {
                "type": "object",
                "properties": {"text": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2}},
                "required": ["text"],
            },
        },
    },
]


@pytest.mark.parametrize("seed", range(3))
def test_qwen35_calls_are_held_to_its_xml_layout_and_parse_back(exported, seed):
    """Qwen3.5 (its template writes XML calls): tool_choice "required" holds sampled answers to
    <tool_call><function=...><parameter=...> blocks whose arguments, read back as the server reads
    them, are valid against each tool's schema."""
    from genai_qwen3vl.runtime.serve.output import parse_call, tool_schemas

    folder = exported("q35")
    model, processor = _loaded(folder)
    prompt = processor.apply_chat_template([{"role": "user", "content": "Set an alarm."}], tools=XML_TOOLS, enable_thinking=False)
    assert prompt.endswith("<think>\n\n</think>\n\n")
    inputs = processor.process(prompt)
    search = {"max_length": int(inputs.input_ids.shape[1]) + 160, "do_sample": True, "temperature": 1.0, "random_seed": seed}
    guidance = Constraint.tool_calls(XML_TOOLS, parallel=False, xml=True).guidance()
    with TokenStream(model, inputs.og_arrays(), search, guidance=guidance) as stream:
        tokens = list(stream)
    eos = set(ExportedFolder.open(folder).eos_token_ids)
    text = processor.tokenizer.decode([t for t in tokens if t not in eos])
    assert text.startswith("<tool_call>\n<function=") and text.endswith("</function>\n</tool_call>"), text
    call = parse_call(text.removeprefix("<tool_call>").removesuffix("</tool_call>"), tool_schemas(XML_TOOLS))
    assert call is not None, text
    schema = next(t["function"]["parameters"] for t in XML_TOOLS if t["function"]["name"] == call["name"])
    jsonschema.validate(json.loads(call["arguments"]), schema)
