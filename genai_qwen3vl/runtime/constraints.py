"""Structured output: the answer held to a JSON schema, a regular expression, a list of choices, a
Lark grammar or the given tools' calls, by onnxruntime-genai's own guidance
(``og.GeneratorParams.set_guidance``: llguidance, compiled into og 0.18's wheel).

    Constraint.json_schema(schema) | .json_object() | .regex(pattern) | .choice(options)
        | .grammar(lark) | .tool_calls(tools, names, parallel) | .tools_in_text(tools) | a | b
    constraint.guidance(thinking)      -> ("lark_grammar", text), for GeneratorParams.set_guidance
    ConstraintChecker(folder).check(c) -> a ConstraintError naming the problem, before generating

og is given one grammar in llguidance's Lark dialect:

    %llguidance {"no_forcing": true}      the model picks its own tokens for text the grammar
                                          forces (with forcing, llguidance allows only the forced
                                          text's canonical tokens, which changed answers the
                                          constraint allows: a token spanning "\\n{" was refused)
    start: answer                         or, where the prompt opened <think> (Thinking checkpoints):
    start: gq_thinking gq_gap? answer     the reasoning free up to </think>, then the answer held
    answer: ...                           the constraint; its helper rules are named gq_*

JSON is held to Python's ``json.dumps`` layout (", " between items, ": " after keys, no other
whitespace), the layout Qwen's chat template writes tool calls in: whitespace the grammar leaves
free lets a small model write newlines forever (llguidance's default, measured here: a tiny
checkpoint wrote 60 newlines after "{" and never closed the object). A schema's own top-level
``x-guidance`` options (llguidance's) win over these. Tool calls are Qwen's
``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`` blocks.

The checks (``ConstraintChecker``) run in the process that takes the request, with llguidance's
Python package, before the request is queued: the text's size, the JSON schema against its
metaschema (``jsonschema``), a schema with no finite instance (a ``$ref`` cycle through required
properties), what llguidance cannot compile, and a constraint that admits no answer at all. The
verdicts are cached by the constraint's text. og compiles the grammar again for each generator
(og 0.18 keeps no compiled grammar across generators; about 1-3 ms for the schemas tested here).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError

NO_FORCING = '%llguidance {"no_forcing": true}'
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
CALL_OPEN, CALL_CLOSE = "<tool_call>\n", "\n</tool_call>"
MAX_CHARS = 128 * 1024  # of a schema, regex, grammar or the choices together
MAX_CHOICES = 4096
CACHE_SIZE = 256


class ConstraintError(InputError):
    """A schema, regex, choice list or grammar that cannot constrain an answer; the message names
    the problem and the fix."""


def _lark_string(text: str) -> str:
    """A Lark string literal (llguidance reads JSON's escapes)."""
    return json.dumps(text, ensure_ascii=False)


def _with_layout(schema: Any) -> Any:
    """The schema with our JSON layout as its ``x-guidance`` defaults (its own options win)."""
    if isinstance(schema, bool):
        schema = {} if schema else {"not": {}}
    if not isinstance(schema, dict):
        raise ConstraintError(f"a JSON schema must be an object or a boolean, got {type(schema).__name__}")
    own = schema.get("x-guidance")
    return {**schema, "x-guidance": {**JSON_LAYOUT, **(own if isinstance(own, dict) else {})}}


def _json_rule(name: str, schema: Any) -> str:
    return f"{name}: %json {json.dumps(_with_layout(schema), ensure_ascii=False)}"


# a Lark grammar's strings, regexes, comments (kept as they are) and names
_LARK_PARTS = re.compile(r'"(?:[^"\\\n]|\\.)*"|/(?:[^/\\\n]|\\.)+/|//[^\n]*|#[^\n]*|[A-Za-z_][A-Za-z0-9_-]*')


def _renamed(lark: str, rename) -> str:
    """``lark`` with each rule name ``n`` replaced by ``rename(n)`` (a name, or None to keep it);
    strings, regexes, comments and inline JSON (its keys are strings) are left alone."""
    return _LARK_PARTS.sub(lambda m: (rename(m.group(0)) or m.group(0)) if m.group(0)[0] not in '"/#' else m.group(0), lark)


@dataclasses.dataclass(frozen=True)
class Constraint:
    """What the answer must be. ``kind``: json | regex | choice | grammar | tools | any (a union);
    ``text``: the client's schema, pattern, choices or grammar as given (the cache key);
    ``rules``: the Lark rules defining ``answer``; ``check_as``: what the checks compile
    (llguidance's own format and text) and ``schema``: a JSON schema to check for finiteness."""

    kind: str
    text: str
    rules: str
    check_as: tuple[tuple[str, str], ...]
    schemas: tuple[Any, ...] = dataclasses.field(default=(), compare=False)  # hashed by text and rules

    # ------------------------------------------------------------------ the kinds
    @classmethod
    def json_schema(cls, schema: Any) -> Constraint:
        """A JSON value valid against ``schema`` (a dict, a boolean, or its JSON text)."""
        if isinstance(schema, str):
            schema = _parse_json(schema, "the JSON schema")
        text = json.dumps(schema, ensure_ascii=False, sort_keys=True)
        _limit(text, "the JSON schema")
        rules = _json_rule("answer", schema)
        return cls("json", text, rules, (("json", json.dumps(_with_layout(schema), ensure_ascii=False)),), (schema,))

    @classmethod
    def json_object(cls) -> Constraint:
        """Any JSON object (OpenAI's ``{"type": "json_object"}``)."""
        return cls.json_schema({"type": "object"})

    @classmethod
    def regex(cls, pattern: str) -> Constraint:
        """Text matching ``pattern`` as a whole (Rust's regex syntax, as llguidance reads it: no
        look-around, no backreferences)."""
        if not isinstance(pattern, str) or not pattern:
            raise ConstraintError("the regex must be a non-empty string")
        _limit(pattern, "the regex")
        import llguidance

        rules = f"answer: /{llguidance.regex_to_lark(pattern, '')}/"
        return cls("regex", pattern, rules, (("regex", pattern),))

    @classmethod
    def choice(cls, options: Sequence[str]) -> Constraint:
        """Exactly one of ``options``."""
        if not isinstance(options, (list, tuple)) or not options or not all(isinstance(o, str) and o for o in options):
            raise ConstraintError("the choices must be a non-empty list of non-empty strings")
        if len(options) > MAX_CHOICES:
            raise ConstraintError(f"{len(options)} choices; at most {MAX_CHOICES}")
        text = json.dumps(list(options), ensure_ascii=False)
        _limit(text, "the choices")
        rules = "answer: " + " | ".join(_lark_string(o) for o in dict.fromkeys(options))
        return cls("choice", text, rules, (("lark", f"start: answer\n{rules}"),))

    @classmethod
    def grammar(cls, lark: str) -> Constraint:
        """Text in the language of a Lark grammar (llguidance's dialect; its rule ``start``)."""
        if not isinstance(lark, str) or not lark.strip():
            raise ConstraintError("the grammar must be a non-empty Lark grammar with a 'start' rule")
        _limit(lark, "the grammar")
        if lark.lstrip().startswith("%llguidance"):
            raise ConstraintError("the grammar may not set '%llguidance' options; give its rules only")
        # the client's names kept apart from ours: start, answer and gq_* become gq_user_*
        own = _renamed(lark, lambda n: f"gq_user_{n}" if n in ("start", "answer") or n.startswith("gq_") else None)
        rules = f"answer: gq_user_start\n{own}"
        return cls("grammar", lark, rules, (("lark", lark),))

    @classmethod
    def tool_calls(
        cls, tools: Sequence[Mapping], names: Iterable[str] | None = None, parallel: bool = True, xml: bool = False
    ) -> Constraint:
        """One or more (``parallel``) calls of the tools named ``names`` (all by default), each
        with arguments valid against its ``parameters`` schema: ``tool_choice`` "required" or
        a named function. ``xml``: in Qwen3.5's XML layout (``_xml_calls``)."""
        if xml:
            return _xml_calls(tools, names, parallel)
        call = _call_schema(tools, names, strict_only=False)
        rules = "\n".join(
            (
                'answer: gq_call ("\\n" gq_call)*' if parallel else "answer: gq_call",
                f"gq_call: {_lark_string(CALL_OPEN)} gq_args {_lark_string(CALL_CLOSE)}",
                _json_rule("gq_args", call),
            )
        )
        text = json.dumps(["tools", call, parallel], ensure_ascii=False, sort_keys=True)
        return cls("tools", text, rules, _call_checks(call, rules), (call,))

    @classmethod
    def tools_in_text(cls, tools: Sequence[Mapping], xml: bool = False) -> Constraint | None:
        """Free text with tool calls anywhere (``tool_choice`` "auto"), where a call of a tool
        marked ``strict`` must have arguments valid against its schema (any other tool's: any
        JSON object); None when no tool is strict (the answer is left free)."""
        if not any(_function(tool).get("strict") is True for tool in tools):
            return None
        if xml:
            return _xml_calls(tools, None, True, in_text=True)
        call = _call_schema(tools, None, strict_only=True)
        rules = "\n".join(
            (
                f"answer: gq_text | gq_before gq_args {_lark_string(CALL_CLOSE)} answer",
                f"gq_before[suffix={_lark_string(CALL_OPEN)}]: /(.|\\n)*/",
                'gq_text[stop=""]: /(.|\\n)*/',
                _json_rule("gq_args", call),
            )
        )
        text = json.dumps(["tools_in_text", call], ensure_ascii=False, sort_keys=True)
        return cls("tools", text, rules, _call_checks(call, rules), (call,))

    def __or__(self, other: Constraint) -> Constraint:
        """Either answer (a response format, or a call of the tools)."""
        mine, theirs = _renamed_answer(self.rules, "gq_a"), _renamed_answer(other.rules, "gq_b")
        rules = f"answer: gq_a | gq_b\n{mine}\n{theirs}"
        return Constraint("any", json.dumps([self.text, other.text]), rules, self.check_as + other.check_as, self.schemas + other.schemas)

    # ------------------------------------------------------------------ for og
    def guidance(self, thinking: bool = False) -> tuple[str, str]:
        """``(type, data)`` for og's ``GeneratorParams.set_guidance``; ``thinking``: the prompt
        opened ``<think>``, the reasoning up to ``</think>`` stays free."""
        if thinking:
            head = 'start: gq_thinking gq_gap? answer\ngq_thinking[suffix="</think>"]: /(.|\\n)*/\ngq_gap: "\\n" | "\\n\\n"'
        else:
            head = "start: answer"
        return "lark_grammar", f"{NO_FORCING}\n{head}\n{self.rules}\n"


# Qwen3.5's tool calls (its chat template's layout): <tool_call>\n<function=NAME>\n, then per
# argument <parameter=KEY>\nVALUE\n</parameter>\n, then </function>\n</tool_call>
XML_CALL_OPEN, XML_CALL_CLOSE = "<tool_call>\n<function=", "</function>\n</tool_call>"
_XML_STRING = {"type": "string"}


def _xml_calls(tools: Sequence[Mapping], names: Iterable[str] | None, parallel: bool, in_text: bool = False) -> Constraint:
    """Calls in Qwen3.5's XML layout. A tool's arguments follow its schema's properties in their
    order, the required ones always, the others optionally; a string value is text up to
    ``\n</parameter>`` (one of its ``enum`` where it has one), any other value JSON valid against
    the property's schema. A tool without properties (or, ``in_text``, one not marked strict) takes
    any parameters, as text. ``in_text``: free text with such calls anywhere (``tools_in_text``)."""
    functions = {_function(tool)["name"]: _function(tool) for tool in tools}
    wanted = list(functions) if names is None else list(names)
    for name in wanted:
        if name not in functions:
            raise ConstraintError(f"tool_choice names the function {name!r}, which is not among the tools ({', '.join(functions)})")
    rules = [
        'gq_text_value[suffix="\\n</parameter>\\n"]: /(.|\\n)*/',
        'gq_any_param: "<parameter=" /[^>\\n]+/ ">\\n" gq_text_value',
    ]
    alternatives, schemas = [], []
    for f, name in enumerate(wanted):
        function = functions[name]
        held = function.get("strict") is True or not in_text
        parameters = function.get("parameters") if held else None
        properties = parameters.get("properties") if isinstance(parameters, dict) else None
        body = [_lark_string(f"{name}>\n")]
        if not isinstance(properties, dict) or not properties:
            body.append("gq_any_param*")
        else:
            required = set(parameters.get("required") or ())
            for p, (key, schema) in enumerate(properties.items()):
                rule = f"gq_f{f}_p{p}"
                value = _xml_value_rule(f"{rule}_value", schema)
                rules.append(f"{rule}: {_lark_string(f'<parameter={key}>' + chr(10))} {value[0]}")
                rules.extend(value[1])
                schemas.extend(value[2])
                body.append(rule if key in required else f"{rule}?")
        rules.append(f"gq_f{f}: {' '.join(body)}")
        alternatives.append(f"gq_f{f}")
    rules.append(f"gq_function: {' | '.join(alternatives)}")
    if in_text:
        head = [
            f"answer: gq_text | gq_before gq_function {_lark_string(XML_CALL_CLOSE)} answer",
            f"gq_before[suffix={_lark_string(XML_CALL_OPEN)}]: /(.|\\n)*/",
            'gq_text[stop=""]: /(.|\\n)*/',
        ]
    else:
        head = [
            'answer: gq_call ("\\n" gq_call)*' if parallel else "answer: gq_call",
            f"gq_call: {_lark_string(XML_CALL_OPEN)} gq_function {_lark_string(XML_CALL_CLOSE)}",
        ]
    text = "\n".join((*head, *rules))
    key = json.dumps(
        ["xml_tools_in_text" if in_text else "xml_tools", [functions[n] for n in wanted], parallel], ensure_ascii=False, sort_keys=True
    )
    checks = tuple(("json", json.dumps(_with_layout(schema), ensure_ascii=False)) for schema in schemas)
    return Constraint("tools", key, text, (*checks, ("lark", f"start: answer\n{text}")), tuple(schemas))


def _xml_value_rule(name: str, schema: Any) -> tuple[str, list[str], list[Any]]:
    """(what matches one parameter's value and its closing tag, the rules that takes, the JSON
    schemas among them)."""
    close = _lark_string("\n</parameter>\n")
    if not isinstance(schema, dict) or schema.get("type") == "string":
        options = schema.get("enum") if isinstance(schema, dict) else None
        if isinstance(options, list) and options and all(isinstance(o, str) for o in options):
            return f"({' | '.join(_lark_string(o) for o in options)}) {close}", [], []
        return "gq_text_value", [], []
    return f"{name} {close}", [_json_rule(name, schema)], [schema]


def _call_checks(call: dict, rules: str) -> tuple[tuple[str, str], ...]:
    """What the checks compile for tool calls: the call's schema alone (its errors read plainly),
    then the rules."""
    return ("json", json.dumps(_with_layout(call), ensure_ascii=False)), ("lark", f"start: answer\n{rules}")


def _renamed_answer(rules: str, name: str) -> str:
    """The rules with ``answer`` and the gq_ helpers (ours and a grammar's renamed start) renamed
    apart for a union."""
    return _renamed(rules, lambda n: name if n == "answer" else f"{name}_{n}" if n.startswith("gq_") else None)


def _function(tool: Mapping) -> Mapping:
    function = tool.get("function") if isinstance(tool, Mapping) else None
    if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
        raise ConstraintError("each tool must be {'type': 'function', 'function': {'name': ..., 'parameters': {...}}}")
    return function


def _call_schema(tools: Sequence[Mapping], names: Iterable[str] | None, strict_only: bool) -> dict:
    """The JSON schema of one call: ``{"name": <a tool>, "arguments": <its parameters>}``."""
    functions = {_function(tool)["name"]: _function(tool) for tool in tools}
    wanted = list(functions) if names is None else list(names)
    for name in wanted:
        if name not in functions:
            raise ConstraintError(f"tool_choice names the function {name!r}, which is not among the tools ({', '.join(functions)})")
    options = []
    for name in wanted:
        function = functions[name]
        held = function.get("strict") is True or not strict_only
        parameters = function.get("parameters") if held else None
        arguments = parameters if isinstance(parameters, (dict, bool)) and parameters != {} else {"type": "object"}
        options.append(
            {
                "type": "object",
                "properties": {"name": {"const": name}, "arguments": arguments},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    return options[0] if len(options) == 1 else {"anyOf": options}


def _parse_json(text: str, what: str) -> Any:
    _limit(text, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConstraintError(f"{what} is not valid JSON ({exc})") from None


def _limit(text: str, what: str) -> None:
    if len(text) > MAX_CHARS:
        raise ConstraintError(f"{what} is {len(text)} characters; at most {MAX_CHARS}: send a smaller one")


# ---------------------------------------------------------------------- checks
def check_schema(schema: Any, where: str = "the JSON schema") -> None:
    """A ConstraintError when ``schema`` is not a valid JSON Schema (its metaschema; draft
    2020-12 unless it says ``$schema``), or has no finite instance."""
    from jsonschema import exceptions, validators

    if not isinstance(schema, (dict, bool)):
        raise ConstraintError(f"{where} must be a JSON object or a boolean")
    try:
        validators.validator_for(schema, default=validators.Draft202012Validator).check_schema(schema)
    except exceptions.SchemaError as exc:
        at = "/".join(map(str, exc.absolute_path)) or "the top level"
        raise ConstraintError(f"{where} is not a valid JSON Schema at {at}: {exc.message}") from None
    if not _finite(schema):
        raise ConstraintError(
            f"{where} has no finite instance: a $ref cycle runs through required properties or items "
            "(every value would nest forever); make a property along the cycle optional"
        )


def _pointer(root: Any, ref: str) -> Any:
    """A local ``$ref`` ("#", "#/$defs/x", "#/definitions/x", a JSON pointer); None elsewhere."""
    if not ref.startswith("#"):
        return None
    node = root
    for part in [p for p in ref[1:].split("/") if p]:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _finite(root: Any) -> bool:
    """Whether the schema has a finite instance, as a grammar's productive symbols are found: the
    local ``$ref`` targets start as unproductive and become productive until nothing changes.
    Constraints other than structure (bounds, patterns) are taken as satisfiable: llguidance
    reports those it finds unsatisfiable itself."""
    productive: set[str] = set()

    def ok(node: Any, depth: int = 0) -> bool:
        if depth > 200 or isinstance(node, bool):
            return node is True if isinstance(node, bool) else True
        if not isinstance(node, dict):
            return True
        if "$ref" in node and isinstance(node["$ref"], str) and _pointer(root, node["$ref"]) is not None:
            if node["$ref"] not in productive:
                return False
        if "const" in node or "enum" in node:
            return True
        if isinstance(node.get("allOf"), list) and not all(ok(s, depth + 1) for s in node["allOf"]):
            return False
        for key in ("anyOf", "oneOf"):
            if isinstance(node.get(key), list) and node[key] and not any(ok(s, depth + 1) for s in node[key]):
                return False
        types = node.get("type")
        types = [types] if isinstance(types, str) else types if isinstance(types, list) else None
        if types is None or any(t in ("string", "number", "integer", "boolean", "null") for t in types):
            return True  # an untyped schema admits scalars whatever it says of objects and arrays
        results = []
        if "object" in types:
            properties = node.get("properties") if isinstance(node.get("properties"), dict) else {}
            required = node.get("required") if isinstance(node.get("required"), list) else []
            results.append(all(ok(properties.get(name, True), depth + 1) for name in required if isinstance(name, str)))
        if "array" in types:
            low = node.get("minItems", 0)
            prefix = node.get("prefixItems") if isinstance(node.get("prefixItems"), list) else []
            items = node.get("items", True)
            needed = prefix[:low] if isinstance(low, int) else []
            more = isinstance(low, int) and low > len(prefix)
            results.append(all(ok(s, depth + 1) for s in needed) and (not more or ok(items, depth + 1)))
        return any(results) if results else True

    refs = sorted(_refs(root))
    changed = True
    while changed:
        changed = False
        for ref in refs:
            if ref not in productive and ok(_pointer(root, ref)):
                productive.add(ref)
                changed = True
    return ok(root)


def _refs(node: Any) -> set[str]:
    found: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("$ref"), str):
                found.add(item["$ref"])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


class ConstraintChecker:
    """The checks for one exported folder's tokenizer (llguidance's, built once, lazily)."""

    def __init__(self, tokenizer_json: str | Path, vocab_size: int | None, eos_token_id: int | None):
        self.tokenizer_json = str(tokenizer_json)
        self.vocab_size = vocab_size
        self.eos = eos_token_id
        self._tokenizer = None
        self._lock = threading.Lock()
        self.verdict = functools.lru_cache(maxsize=CACHE_SIZE)(self._verdict)

    @classmethod
    def for_folder(cls, folder) -> ConstraintChecker:
        """For an ``ExportedFolder``."""
        return cls(folder.path / "tokenizer.json", folder.vocab_size, folder.eos_token_ids[0] if folder.eos_token_ids else None)

    def tokenizer(self):
        """llguidance's tokenizer for the folder, built once (by whichever thread asks first)."""
        with self._lock:
            if self._tokenizer is None:
                import llguidance

                self._tokenizer = llguidance.LLTokenizer(self.tokenizer_json, n_vocab=self.vocab_size, eos_token=self.eos)
            return self._tokenizer

    def check(self, constraint: Constraint) -> None:
        """A ConstraintError when ``constraint`` cannot hold an answer; cached by its text."""
        error = self.verdict(constraint)
        if error is not None:
            raise ConstraintError(error)

    def _verdict(self, constraint: Constraint) -> str | None:
        try:
            return self._checked(constraint)
        except RecursionError:
            return "the constraint is nested too deeply to check; flatten it (fewer levels of objects, arrays or $refs)"
        except Exception as exc:  # noqa: BLE001 - a client's schema never becomes a 500: whatever a library raises is its 400
            return f"the constraint cannot be checked: {type(exc).__name__}: {_first_line(str(exc))}"

    def _checked(self, constraint: Constraint) -> str | None:
        import llguidance

        try:
            for schema in constraint.schemas:
                check_schema(schema, "the tool's parameters schema" if constraint.kind == "tools" else "the JSON schema")
        except ConstraintError as exc:
            return str(exc)
        what = {"json": "the JSON schema", "regex": "the regex", "choice": "the choices", "grammar": "the grammar"}.get(
            constraint.kind, "the constraint"
        )
        for fmt, text in constraint.check_as:
            try:
                grammar = llguidance.grammar_from(fmt, text)
            except ValueError as exc:
                return f"{what} cannot be compiled: {exc}"
            is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
            if is_error:
                return f"{what} cannot be used for constrained decoding: {_first_line(messages[0] if messages else 'unknown error')}"
        _, text = constraint.guidance()
        grammar = llguidance.grammar_from("lark", text)
        matcher = llguidance.LLMatcher(self.tokenizer(), grammar)
        if matcher.is_error() and not matcher.is_accepting():
            return f"{what} admits no text at all (it matches nothing); check it against an example answer"
        matcher.compute_bitmask()
        if matcher.is_error() and not matcher.is_accepting():
            return f"{what} admits no text at all (it matches nothing); check it against an example answer"
        return None


def _first_line(message: str) -> str:
    """llguidance's message on one line (its source excerpts and carets dropped), at most 400 characters."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip() and not set(line.strip()) <= set("^ |")]
    lines = [line for line in lines if not re.match(r"^\d+ \|", line)]
    return " ".join(lines)[:400]
