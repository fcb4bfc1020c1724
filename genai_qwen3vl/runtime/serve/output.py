"""The generated text, split as it streams into what OpenAI's API returns.

    pieces --> StopFilter ---------> OutputSplitter --> ("reasoning", text)   -> reasoning_content
               (stop strings cut,    (<think>..</think>,  ("content", text)     -> content
                partial matches       <tool_call>..        ("tool_call", {...}) -> tool_calls
                held back)            </tool_call>)

Reasoning follows vLLM's qwen3 parser and llama-server: when the prompt opened ``<think>``
(Qwen3-VL-Thinking's template ends the generation prompt with it) everything up to ``</think>``
is reasoning; otherwise an answer that starts with ``<think>`` is. Tool calls are Qwen's
``<tool_call>`` blocks, parsed only when the request gave tools: Qwen3-VL's JSON
``{"name": ..., "arguments": {...}}``, or Qwen3.5's XML ``<function=NAME><parameter=P>value
</parameter>...</function>`` (values typed by the tool's schema, as vLLM's qwen3_coder parser
does); a block in neither form stays in the content, as vLLM's hermes parser leaves it.
A tag split across tokens is held back until it is complete, so a stream never shows half a tag.
Plain answers (no tags) pass through unchanged, character for character.
"""

from __future__ import annotations

import json

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"


def _held(text: str, tags) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of a tag."""
    best = 0
    for tag in tags:
        for n in range(min(len(tag) - 1, len(text)), best, -1):
            if text.endswith(tag[:n]):
                best = n
                break
    return best


class StopFilter:
    """Cuts the text at the first stop string (not included), holding back partial matches."""

    def __init__(self, stops: list[str]):
        self.stops = stops
        self.buffer = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        if not self.stops:
            return piece
        self.buffer += piece
        hits = [i for i in (self.buffer.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            out, self.buffer = self.buffer[: min(hits)], ""
            return out
        keep = _held(self.buffer, self.stops)
        out = self.buffer[: len(self.buffer) - keep]
        self.buffer = self.buffer[len(out) :]
        return out

    def finish(self) -> str:
        out, self.buffer = self.buffer, ""
        return out


class OutputSplitter:
    def __init__(self, prompt_opened_think: bool, parse_tools: bool, tools: list[dict] | None = None):
        self.state = "reasoning" if prompt_opened_think else "start"
        self.parse_tools = parse_tools
        self.schemas = tool_schemas(tools)
        self.buffer = ""
        self.after_think = False  # strip the newlines Qwen writes after </think>
        self.pending_space = ""  # whitespace that may only separate tool calls
        self.right_after_call = False
        self.calls = 0

    def feed(self, text: str) -> list[tuple[str, object]]:
        self.buffer += text
        events: list[tuple[str, object]] = []
        while self.buffer:
            before = (self.state, len(self.buffer))
            getattr(self, f"_{self.state}")(events, final=False)
            if (self.state, len(self.buffer)) == before:
                break
        return events

    def finish(self) -> list[tuple[str, object]]:
        events: list[tuple[str, object]] = []
        while self.buffer:
            getattr(self, f"_{self.state}")(events, final=True)
        if self.pending_space and not self.calls:
            events.append(("content", self.pending_space))
        self.pending_space = ""
        return events

    # ------------------------------------------------------------------ states
    def _start(self, events, final: bool) -> None:
        stripped = self.buffer.lstrip()
        if stripped.startswith(THINK_OPEN):
            self.buffer = stripped[len(THINK_OPEN) :]
            self.state = "reasoning"
        elif not final and THINK_OPEN.startswith(stripped):
            return  # maybe the start of <think>
        else:
            self.state = "content"

    def _reasoning(self, events, final: bool) -> None:
        end = self.buffer.find(THINK_CLOSE)
        if end >= 0:
            if end:
                events.append(("reasoning", self.buffer[:end]))
            self.buffer = self.buffer[end + len(THINK_CLOSE) :]
            self.state, self.after_think = "content", True
            return
        keep = 0 if final else _held(self.buffer, [THINK_CLOSE])
        if len(self.buffer) > keep:
            events.append(("reasoning", self.buffer[: len(self.buffer) - keep]))
            self.buffer = self.buffer[len(self.buffer) - keep :]
        elif final:
            self.buffer = ""

    def _content(self, events, final: bool) -> None:
        if self.after_think:
            stripped = self.buffer.lstrip("\n")
            if not stripped and not final:
                self.buffer = ""
                return
            self.buffer, self.after_think = stripped, False
        start = self.buffer.find(CALL_OPEN) if self.parse_tools else -1
        if start >= 0:
            self._emit_content(events, self.buffer[:start], before_call=True)
            self.buffer = self.buffer[start + len(CALL_OPEN) :]
            self.state = "call"
            return
        keep = 0 if final or not self.parse_tools else _held(self.buffer, [CALL_OPEN])
        text = self.buffer[: len(self.buffer) - keep]
        self.buffer = self.buffer[len(text) :]
        self._emit_content(events, text, before_call=False)
        if final:
            self.buffer = ""

    def _emit_content(self, events, text: str, before_call: bool) -> None:
        if not self.parse_tools:
            if text:
                events.append(("content", text))
            return
        # with tools, whitespace around tool calls is layout, not content
        text, self.pending_space = self.pending_space + text, ""
        if self.right_after_call:
            text = text.lstrip()
        body = text.rstrip()
        if body:
            events.append(("content", body))
            self.right_after_call = False
        if not before_call:
            self.pending_space = text[len(body) :]

    def _call(self, events, final: bool) -> None:
        end = self.buffer.find(CALL_CLOSE)
        if end < 0:
            if final:  # an unterminated block stays text
                events.append(("content", CALL_OPEN + self.buffer))
                self.buffer = ""
            return
        raw, self.buffer = self.buffer[:end], self.buffer[end + len(CALL_CLOSE) :]
        self.state = "content"
        call = parse_call(raw, self.schemas)
        if call is None:
            events.append(("content", CALL_OPEN + raw + CALL_CLOSE))
            return
        events.append(("tool_call", call))
        self.calls += 1
        self.right_after_call = True


def tool_schemas(tools: list[dict] | None) -> dict[str, dict]:
    """function name -> its parameters' JSON schema, from a request's ``tools``."""
    schemas = {}
    for tool in tools or ():
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            parameters = function.get("parameters")
            schemas[function["name"]] = parameters if isinstance(parameters, dict) else {}
    return schemas


def parse_call(raw: str, schemas: dict[str, dict] | None = None) -> dict | None:
    """A ``<tool_call>`` block's body as {"name", "arguments" (JSON text)}, or None where it is
    neither form: Qwen3-VL's JSON object, or Qwen3.5's XML (``<function=NAME>`` with one
    ``<parameter=P>`` per argument)."""
    body = raw.strip()
    if body.startswith(FUNCTION_OPEN):
        return _parse_xml_call(body, schemas or {})
    return _parse_json_call(body)


FUNCTION_OPEN, FUNCTION_CLOSE = "<function=", "</function>"
PARAMETER_OPEN, PARAMETER_CLOSE = "<parameter=", "</parameter>"


def _parse_xml_call(body: str, schemas: dict[str, dict]) -> dict | None:
    """Qwen3.5's tool call, read as vLLM's qwen3_coder parser and llama-server read it: the name up
    to the first ``>``; each parameter's value is the text up to ``</parameter>`` (or the next
    parameter, or ``</function>``) less one newline at each end, typed by the tool's schema."""
    head, _, rest = body[len(FUNCTION_OPEN) :].partition(">")
    name = head.strip()
    if not name or not rest:
        return None
    rest = rest.split(FUNCTION_CLOSE, 1)[0]
    properties = (schemas.get(name) or {}).get("properties")
    properties = properties if isinstance(properties, dict) else {}
    arguments = {}
    for chunk in rest.split(PARAMETER_OPEN)[1:]:
        key, sep, value = chunk.partition(">")
        if not sep:
            return None
        value = value.split(PARAMETER_CLOSE, 1)[0]
        value = value[1:] if value.startswith("\n") else value
        value = value[:-1] if value.endswith("\n") else value
        arguments[key.strip()] = _typed(value, properties.get(key.strip()))
    if rest.split(PARAMETER_OPEN)[0].strip():  # text outside any parameter: not a call
        return None
    return {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}


_STRING_TYPES = {"string", "str", "text", "varchar", "char", "enum"}


def _typed(value: str, schema) -> object:
    """A parameter's text as its schema's type: strings as written; numbers, booleans, null,
    objects and arrays as JSON (the template writes them so); as written where that fails."""
    kind = schema.get("type") if isinstance(schema, dict) else None
    if kind is None or (isinstance(kind, str) and kind.lower() in _STRING_TYPES):
        return value
    text = value.strip()
    if text.lower() in ("null", "none"):
        return None
    if kind in ("boolean", "bool") and text.lower() in ("true", "false"):
        return text.lower() == "true"
    if kind == "integer":
        try:
            return int(text)
        except ValueError:
            return value
    if kind == "number":
        try:
            number = float(text)
        except ValueError:
            return value
        return int(text) if text.lstrip("-").isdigit() else number
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return value


def _parse_json_call(body: str) -> dict | None:
    try:
        value = json.loads(body)
    except json.JSONDecodeError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    arguments = value.get("arguments", value.get("parameters", {}))
    return {"name": value["name"], "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)}
