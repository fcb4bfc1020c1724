"""``POST /v1/chat/completions`` requests: OpenAI's JSON checked field by field and turned into
what the checkpoint's chat template and our processor take.

OpenAI's message parts become transformers' (the shape Qwen3-VL's template reads):

    {"type": "text", "text": ...}                        -> {"type": "text", "text": ...}
    {"type": "image_url", "image_url": {"url": ...}}     -> {"type": "image"}   + the url, in order
    {"type": "video_url", "video_url": {"url": ...}}     -> {"type": "video"}   + the url, in order (vLLM's name)

Assistant ``tool_calls`` keep OpenAI's shape with ``arguments`` parsed from its JSON string (as
vLLM hands them to Qwen's template); ``tool`` messages keep their text. Parameters of OpenAI's API
that stock onnxruntime-genai cannot honour are refused with a 400 naming them, not ignored.

The bodies are pydantic models (``ChatCompletionRequest`` in, ``ChatCompletion`` /
``ChatCompletionChunk`` / ``ModelList`` / ``ErrorResponse`` out), so the OpenAPI schema the server
publishes at ``/openapi.json`` is the one it checks against. A request is parsed by
``strict_json`` (no NaN, bounded depth), then checked field by field in OpenAI's words, one 400
naming the field and the fix (``_checked``: the messages clients and tests rely on, which
pydantic's own errors do not give), then validated into the typed model, whose
``to_chat_request()`` gives the chat template's messages and the media in order.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import from_json

from ...errors import InputError
from ..constraints import Constraint, ConstraintError
from ..sampling import BOUNDS, INT32_MAX, Bound
from .errors import APIError, bad_request, quote, unsupported

ROLES = ("system", "developer", "user", "assistant", "tool")
MAX_STOP = 16


@dataclasses.dataclass
class Sampling:
    """What the request asks of the search; None = the checkpoint's default (genai_config.json)."""

    max_tokens: int | None = None
    min_tokens: int | None = None  # vLLM's extension: no end of sequence before this many tokens
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    repetition_penalty: float | None = None
    stop: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class ChatRequest:
    model: str | None
    messages: list[dict]  # transformers-style, for the chat template
    images: list[str]  # urls, in the order the template writes their markers
    videos: list[str]
    sampling: Sampling
    stream: bool = False
    include_usage: bool = False
    tools: list[dict] | None = None
    parse_tools: bool = False
    template_kwargs: dict = dataclasses.field(default_factory=dict)
    mm_kwargs: dict = dataclasses.field(default_factory=dict)
    return_token_ids: bool = False
    constraint: Constraint | None = None  # structured output: response_format, structured_outputs, tool_choice
    constraint_param: str | None = None  # the field it came from, for a 400 about it


def strict_json(data: bytes | str) -> Any:
    """JSON as RFC 8259 defines it, parsed by pydantic's parser (jiter): no NaN or Infinity, no
    lone UTF-16 surrogates, at most 200 levels deep, integers of at most 4300 digits; anything
    else is a ValueError naming the problem and where (Python's json takes NaN, and fails on deep
    nesting or long integers with RecursionError or a ValueError of its own)."""
    try:
        return from_json(data, allow_inf_nan=False)
    except ValueError as exc:
        text = str(exc)
        raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
        for needle, why in (
            ("recursion limit", "nested more than 200 levels deep"),
            ("out of range", "an integer of 4300+ digits"),
            ("hex escape", "a \\ud800-\\udfff escape that is not a surrogate pair"),
        ):
            if needle in text:
                raise InputError(f"{text}: {why}") from None
        if text.startswith(("expected value", "invalid number")) and (b"NaN" in raw or b"Infinity" in raw):
            raise InputError(f"{text}: NaN and Infinity are not JSON; send finite numbers") from None
        raise


# strict_json reads jiter's error wording, written against pydantic-core 2.50.5 (constraints.txt):
# each probe must still fail with a message that contains its needle.
JITER_WORDING = "pydantic-core 2.50.5"
JITER_PROBES = (
    (b"[" * 300 + b"]" * 300, "recursion limit"),
    (b"1" * 4301, "out of range"),
    (b'"\\ud800x"', "hex escape"),
    (b"NaN", "expected value"),
    (b"-Infinity", "invalid number"),
)


def jiter_wording_changed() -> list[str]:
    """The needles strict_json looks for that pydantic-core's parser no longer writes."""
    changed = []
    for data, needle in JITER_PROBES:
        try:
            from_json(data, allow_inf_nan=False)
            changed.append(needle)
        except ValueError as exc:
            if needle not in str(exc):
                changed.append(needle)
    return changed


if jiter_wording_changed():
    raise RuntimeError(
        f"{__file__}: the installed pydantic-core's JSON errors no longer say {', '.join(map(repr, jiter_wording_changed()))}, "
        f"which strict_json (written against {JITER_WORDING}) reads; install the version in constraints.txt"
    )


def _number(body: dict, key: str, bound: Bound):
    """A finite number (an integer for an int ``bound``, 32-bit then) within ``bound``; client
    input in the errors is quoted, never echoed whole."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):  # 1e400 parses as inf
        raise bad_request(f"'{key}' must be a finite number, got {quote(value)}", key)
    if bound.kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int if bound.kind is int else (int, float)):
        raise bad_request(f"'{key}' must be {'an integer' if bound.kind is int else 'a number'}, got {quote(value)}", key)
    if isinstance(value, int) and abs(value) > INT32_MAX:
        raise bad_request(f"'{key}' must be between {-INT32_MAX} and {INT32_MAX}, got {quote(value)}", key)
    try:
        return bound.check(key, value)
    except ValueError as exc:
        raise bad_request(str(exc), key) from None


def _sampled(body: dict, key: str):
    """A sampling field, in the ranges every entry point shares (runtime/sampling.py)."""
    return _number(body, key, BOUNDS[key])


def _url(part: dict, kind: str, where: str) -> str:
    value = part.get(kind)
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str) or not url:
        raise bad_request(f"{where}: a '{kind}' part needs {{'{kind}': {{'url': ...}}}}", where)
    return url


def _text_of(content: Any, where: str) -> str:
    """System, assistant and tool content: a string or text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise bad_request(f"{where}.content[{j}]: only text parts are allowed here", f"{where}.content")
            texts.append(part["text"])
        return "".join(texts)
    raise bad_request(f"{where}.content must be a string or a list of content parts", f"{where}.content")


def _user_content(content: Any, where: str):
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_request(f"{where}.content must be a string or a list of content parts", f"{where}.content")
    parts = []
    for j, part in enumerate(content):
        here = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise bad_request(f"{here}: a text part needs a string 'text'", here)
            parts.append({"type": "text", "text": part["text"]})
        elif kind in ("image_url", "video_url"):
            parts.append({"type": kind, kind: {"url": _url(part, kind, here)}})
        elif kind in ("input_audio", "audio_url", "file"):
            raise unsupported(here, f"Qwen3-VL takes text, images and videos, not '{kind}' parts")
        else:
            raise bad_request(f"{here}: unknown content part type {quote(kind)} (text, image_url or video_url)", here)
    return parts


def _tool_calls(calls: Any, where: str) -> list[dict]:
    if not isinstance(calls, list):
        raise bad_request(f"{where}.tool_calls must be a list", f"{where}.tool_calls")
    out = []
    for j, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise bad_request(f"{where}.tool_calls[{j}] needs a 'function' with a 'name'", f"{where}.tool_calls")
        arguments = function.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = strict_json(arguments) if arguments.strip() else {}
            except ValueError as exc:
                raise bad_request(f"{where}.tool_calls[{j}].function.arguments is not valid JSON ({exc})", f"{where}.tool_calls") from None
        out.append({"id": call.get("id"), "type": "function", "function": {"name": function["name"], "arguments": arguments}})
    return out


def _messages(raw: Any) -> list[dict]:
    """The messages checked, in the typed models' shape: non-user content joined to a string,
    media parts as ``{"url": ...}``, tool call arguments parsed from their JSON."""
    if not isinstance(raw, list) or not raw:
        raise bad_request("'messages' must be a non-empty list", "messages")
    messages = []
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise bad_request(f"{where} must be an object with 'role' and 'content'", "messages")
        role = message.get("role")
        if role not in ROLES:
            raise bad_request(f"{where}.role must be one of {', '.join(ROLES)}, got {quote(role)}", "messages")
        content = message.get("content")
        if role == "user":
            messages.append({"role": "user", "content": _user_content(content, where)})
        elif role in ("system", "developer"):
            messages.append({"role": role, "content": _text_of(content, where)})
        elif role == "assistant":
            out = {"role": "assistant", "content": _text_of(content, where)}
            if message.get("tool_calls"):
                out["tool_calls"] = _tool_calls(message["tool_calls"], where)
            messages.append(out)
        else:
            out = {"role": "tool", "content": _text_of(content, where)}
            if message.get("tool_call_id") is not None:
                out["tool_call_id"] = message["tool_call_id"]
            messages.append(out)
    return messages


def _stop(value: Any) -> list[str]:
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise bad_request("'stop' must be a non-empty string or a list of them", "stop")
    if len(stops) > MAX_STOP:
        raise bad_request(f"'stop' has {len(stops)} sequences; at most {MAX_STOP}", "stop")
    return stops


def _tools(body: dict) -> tuple[list[dict] | None, str | None]:
    """(the tools, the tool choice: None, 'auto' or 'none')."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if tools is None:
        if choice not in (None, "none", "auto"):
            raise bad_request("'tool_choice' needs 'tools'", "tool_choice")
        return None, choice
    if not isinstance(tools, list) or not all(
        isinstance(t, dict)
        and t.get("type") == "function"
        and isinstance(t.get("function"), dict)
        and isinstance(t["function"].get("name"), str)
        for t in tools
    ):
        raise bad_request("'tools' must be a list of {'type': 'function', 'function': {'name', 'description', 'parameters'}}", "tools")
    if choice in (None, "auto", "none", "required"):
        return tools, choice
    function = choice.get("function") if isinstance(choice, dict) and choice.get("type") == "function" else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise bad_request(
            "'tool_choice' must be 'none', 'auto', 'required' or {'type': 'function', 'function': {'name': ...}}", "tool_choice"
        )
    names = [t["function"]["name"] for t in tools]
    if function["name"] not in names:
        listed = ", ".join(names)
        raise bad_request(f"'tool_choice' names {quote(function['name'])}, which is not among the tools ({listed})", "tool_choice")
    return tools, {"type": "function", "function": {"name": function["name"]}}


STRUCTURED_KINDS = ("json", "regex", "choice", "grammar", "json_object")
# vLLM's structured_outputs options that change nothing here: our JSON has no free whitespace and
# no fallback to another backend
STRUCTURED_NOOPS = ("disable_fallback", "disable_any_whitespace", "disable_additional_properties")
JSON_SCHEMA_FORMAT = "{'type': 'json_schema', 'json_schema': {'name': ..., 'schema': {...}}}"


def _response_format(fmt: Any) -> dict | None:
    """OpenAI's ``response_format``: text, json_object, or json_schema with a name and a schema."""
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind not in ("text", "json_object", "json_schema"):
        raise bad_request(
            f"'response_format' must be {{'type': 'text'}}, {{'type': 'json_object'}} or {JSON_SCHEMA_FORMAT}", "response_format"
        )
    if kind != "json_schema":
        return {"type": kind}
    spec = fmt.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or "schema" not in spec:
        raise bad_request(f"'response_format' of type json_schema must be {JSON_SCHEMA_FORMAT}", "response_format")
    if not isinstance(spec["schema"], (dict, bool)):
        raise bad_request("'response_format.json_schema.schema' must be a JSON Schema (an object)", "response_format")
    return {"type": kind, "json_schema": {key: spec[key] for key in ("name", "description", "schema", "strict") if key in spec}}


def _structured_outputs(value: Any) -> dict | None:
    """vLLM's ``structured_outputs``: exactly one of json, regex, choice, grammar, json_object."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise bad_request("'structured_outputs' must be an object with one of " + ", ".join(STRUCTURED_KINDS), "structured_outputs")
    unknown = sorted(set(value) - set(STRUCTURED_KINDS) - set(STRUCTURED_NOOPS))
    if unknown:
        raise unsupported(
            f"structured_outputs.{unknown[0]}", f"this server takes {', '.join(STRUCTURED_KINDS)} (one of them) in 'structured_outputs'"
        )
    given = [key for key in STRUCTURED_KINDS if value.get(key) not in (None, False)]
    if len(given) != 1:
        raise bad_request(
            f"'structured_outputs' needs exactly one of {', '.join(STRUCTURED_KINDS)}; got {', '.join(given) or 'none'}",
            "structured_outputs",
        )
    key = given[0]
    item = value[key]
    if key == "json" and not isinstance(item, (dict, bool, str)):
        raise bad_request("'structured_outputs.json' must be a JSON Schema (an object, or its JSON text)", "structured_outputs")
    if key in ("regex", "grammar") and (not isinstance(item, str) or not item):
        raise bad_request(f"'structured_outputs.{key}' must be a non-empty string", "structured_outputs")
    if key == "choice" and (not isinstance(item, list) or not item or not all(isinstance(c, str) and c for c in item)):
        raise bad_request("'structured_outputs.choice' must be a non-empty list of non-empty strings", "structured_outputs")
    if key == "json_object" and item is not True:
        raise bad_request("'structured_outputs.json_object' must be true", "structured_outputs")
    return {key: item}


def _checked(body: Any) -> dict:
    """The request checked in the order a client's mistakes are reported (the first one wins),
    each refusal an APIError naming the field; what passes, normalized for the typed model
    (numbers as their kind, ``stop`` a list, flags as booleans, unknown keys dropped)."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise bad_request("'model' must be a string", "model")
    n = _number(body, "n", Bound(int, 1))
    if n not in (None, 1):
        raise unsupported("n", "one choice per request (onnxruntime-genai 0.18 runs one sequence per generator); send n requests instead")
    if body.get("logprobs") or body.get("top_logprobs"):
        raise unsupported("logprobs", "the server returns no log probabilities")
    for key in ("presence_penalty", "frequency_penalty"):
        if _number(body, key, Bound(float)) not in (None, 0.0):
            raise unsupported(key, "onnxruntime-genai 0.18 has no such penalty; use 'repetition_penalty'")
    if body.get("logit_bias"):
        raise unsupported("logit_bias", "onnxruntime-genai 0.18 cannot bias single tokens")
    fmt = _response_format(body.get("response_format"))
    structured = _structured_outputs(body.get("structured_outputs"))
    if fmt is not None and fmt["type"] != "text" and structured is not None:
        raise bad_request("give 'response_format' or 'structured_outputs', not both", "structured_outputs")
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise bad_request("'parallel_tool_calls' must be true or false", "parallel_tool_calls")
    if body.get("max_tokens") is not None and body.get("max_completion_tokens") is not None:
        raise bad_request("give 'max_completion_tokens' or 'max_tokens', not both", "max_tokens")
    max_key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    out: dict[str, Any] = {
        "model": model,
        "n": n,
        max_key: _number(body, max_key, Bound(int, 1)),
        "min_tokens": _number(body, "min_tokens", Bound(int, 0)),
    }
    for key in ("temperature", "top_p", "top_k", "seed", "repetition_penalty"):
        out[key] = _sampled(body, key)
    out["stop"] = _stop(body.get("stop"))
    if out["min_tokens"] and out[max_key] is not None and out["min_tokens"] > out[max_key]:
        raise bad_request(f"'min_tokens' ({out['min_tokens']}) is above '{max_key}' ({out[max_key]})", "min_tokens")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request("'stream' must be true or false", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise bad_request("'stream_options' must be an object", "stream_options")
    template_kwargs = body.get("chat_template_kwargs") or {}
    if not isinstance(template_kwargs, dict):
        raise bad_request("'chat_template_kwargs' must be an object", "chat_template_kwargs")
    reserved = {"messages", "tools", "add_generation_prompt"} & set(template_kwargs)
    if reserved:
        raise bad_request(f"'chat_template_kwargs' may not set {', '.join(sorted(reserved))}", "chat_template_kwargs")
    mm_kwargs = body.get("mm_processor_kwargs") or {}
    if not isinstance(mm_kwargs, dict):
        raise bad_request("'mm_processor_kwargs' must be an object", "mm_processor_kwargs")
    out["messages"] = _messages(body.get("messages"))
    out["tools"], out["tool_choice"] = _tools(body)
    forced = out["tool_choice"] == "required" or isinstance(out["tool_choice"], dict)
    if forced and ((fmt is not None and fmt["type"] != "text") or structured is not None):
        raise bad_request(
            "a forced tool call ('tool_choice' required or a named function) and a response format cannot both hold the answer; give one",
            "tool_choice",
        )
    out.update(response_format=fmt, structured_outputs=structured, parallel_tool_calls=parallel)
    out.update(
        stream=stream,
        stream_options={"include_usage": bool(options.get("include_usage"))},
        chat_template_kwargs=template_kwargs,
        mm_processor_kwargs=mm_kwargs,
        return_token_ids=bool(body.get("return_token_ids")),
    )
    return out


# ---------------------------------------------------------------------- the request, typed
class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Model):
    type: Literal["text"]
    text: str


class MediaURL(_Model):
    url: str = Field(min_length=1, description="a data: URL (base64), or a local path under the server's --allowed-media-dir")


class ImagePart(_Model):
    type: Literal["image_url"]
    image_url: MediaURL | Annotated[str, Field(min_length=1)]


class VideoPart(_Model):
    type: Literal["video_url"]
    video_url: MediaURL | Annotated[str, Field(min_length=1)]


UserPart = Annotated[TextPart | ImagePart | VideoPart, Field(discriminator="type")]
TextContent = str | list[TextPart] | None


class FunctionCall(_Model):
    name: str
    arguments: Any = Field(default=None, description="a JSON string (OpenAI's form) or the parsed value")


class ToolCall(_Model):
    id: Any = None
    type: Literal["function"] = "function"
    function: FunctionCall


class SystemMessage(_Model):
    role: Literal["system", "developer"]
    content: TextContent = None


class UserMessage(_Model):
    role: Literal["user"]
    content: str | list[UserPart]


class AssistantMessage(_Model):
    role: Literal["assistant"]
    content: TextContent = None
    tool_calls: list[ToolCall] | None = None


class ToolMessage(_Model):
    role: Literal["tool"]
    content: TextContent = None
    tool_call_id: Any = None


Message = Annotated[SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")]


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    description: Any = None
    parameters: Any = Field(default=None, description="the arguments' JSON schema")


class Tool(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["function"]
    function: FunctionDefinition


class StreamOptions(_Model):
    include_usage: bool = False


class ResponseFormatText(_Model):
    type: Literal["text"]


class ResponseFormatJSONObject(_Model):
    """Any JSON object."""

    type: Literal["json_object"]


class JSONSchemaSpec(_Model):
    name: str
    description: str | None = None
    schema_: dict[str, Any] | bool = Field(alias="schema", description="the JSON Schema the answer must be valid against")
    strict: bool | None = Field(default=None, description="the answer is always held to the schema")


class ResponseFormatJSONSchema(_Model):
    """JSON valid against a schema (the openai client's ``chat.completions.parse``)."""

    type: Literal["json_schema"]
    json_schema: JSONSchemaSpec


ResponseFormat = Annotated[ResponseFormatText | ResponseFormatJSONObject | ResponseFormatJSONSchema, Field(discriminator="type")]


class StructuredOutputs(_Model):
    """vLLM's ``structured_outputs``: exactly one of json, regex, choice, grammar, json_object."""

    json_: dict[str, Any] | bool | str | None = Field(default=None, alias="json", description="a JSON Schema")
    regex: str | None = Field(default=None, description="a regular expression the whole answer matches (Rust regex syntax)")
    choice: list[str] | None = Field(default=None, description="the answer is exactly one of these")
    grammar: str | None = Field(default=None, description="a Lark grammar (llguidance's dialect), rule 'start'")
    json_object: bool | None = Field(default=None, description="any JSON object")
    disable_fallback: bool | None = None
    disable_any_whitespace: bool | None = None
    disable_additional_properties: bool | None = None


class NamedFunction(_Model):
    name: str


class NamedToolChoice(_Model):
    type: Literal["function"]
    function: NamedFunction


StopString = Annotated[str, Field(min_length=1)]
_MEDIA_KWARGS = "min_pixels, max_pixels (integers, within the checkpoint's limits) and fps (a number in (0, 60])"


def _bounded(name: str, **extra):
    """A Field with ``BOUNDS[name]``'s range (runtime/sampling.py), for the schema."""
    bound = BOUNDS[name]
    limits = {"gt" if bound.low_open else "ge": bound.low, "le": bound.high}
    return Field(default=None, **{k: v for k, v in limits.items() if v is not None}, **extra)


class ChatCompletionRequest(_Model):
    """``POST /v1/chat/completions``: OpenAI's chat request, with vLLM's extensions (``min_tokens``,
    ``repetition_penalty``, ``top_k``, ``chat_template_kwargs``, ``mm_processor_kwargs``,
    ``return_token_ids``). Unknown fields are ignored; parameters stock og cannot honour are refused."""

    model: str | None = Field(default=None, description="the served model's id (GET /v1/models); any other is a 404")
    messages: list[Message] = Field(min_length=1)
    n: int | None = Field(default=None, ge=1, le=1, description="one choice per request")
    logprobs: Literal[False] | None = None
    top_logprobs: Literal[0] | None = None
    presence_penalty: float | None = Field(default=None, ge=0, le=0, description="not supported: only 0")
    frequency_penalty: float | None = Field(default=None, ge=0, le=0, description="not supported: only 0")
    logit_bias: dict[str, float] | None = Field(default=None, max_length=0, description="not supported: only empty")
    response_format: ResponseFormat | None = None
    structured_outputs: StructuredOutputs | None = Field(default=None, description="vLLM's structured output (one kind)")
    max_tokens: int | None = Field(default=None, ge=1, le=INT32_MAX, description="not with max_completion_tokens")
    max_completion_tokens: int | None = Field(default=None, ge=1, le=INT32_MAX, description="not with max_tokens")
    min_tokens: int | None = Field(default=None, ge=0, le=INT32_MAX, description="no end of sequence before this many tokens")
    temperature: float | None = _bounded("temperature", description="0: greedy")
    top_p: float | None = _bounded("top_p")
    top_k: int | None = _bounded("top_k", description="-1 or 0: no top-k cut")
    seed: int | None = _bounded("seed")
    repetition_penalty: float | None = _bounded("repetition_penalty")
    stop: StopString | Annotated[list[StopString], Field(max_length=MAX_STOP)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    chat_template_kwargs: dict[str, Any] | None = Field(
        default=None, description="extra variables for the chat template (e.g. enable_thinking); not messages, tools, add_generation_prompt"
    )
    mm_processor_kwargs: dict[str, Any] | None = Field(default=None, description=_MEDIA_KWARGS)
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = Field(default=None, description="with tool_choice required: one call or several (default)")
    return_token_ids: bool = False

    @model_validator(mode="before")
    @classmethod
    def _check(cls, body: Any) -> dict:
        return _checked(body)

    @classmethod
    def parse(cls, body: Any) -> ChatCompletionRequest:
        """The request, or an APIError 400 naming the first problem."""
        try:
            return cls.model_validate(body)
        except ValidationError as exc:  # what _checked let through and the typed model refuses
            error = exc.errors(include_url=False, include_input=False)[0]
            where = ".".join(map(str, error["loc"]))
            raise bad_request(f"'{where}': {error['msg']}", str(error["loc"][0]) if error["loc"] else None) from None

    def to_chat_request(self, xml_tool_calls: bool = False) -> ChatRequest:
        """``xml_tool_calls``: the checkpoint writes tool calls in Qwen3.5's XML layout (what a
        constraint on calls must hold them to)."""
        images: list[str] = []
        videos: list[str] = []
        messages = [_template_message(message, images, videos) for message in self.messages]
        parse_tools = self.tools is not None and self.tool_choice != "none"
        constraint, param = self._constraint(parse_tools, xml_tool_calls)
        return ChatRequest(
            model=self.model,
            messages=messages,
            images=images,
            videos=videos,
            sampling=Sampling(
                max_tokens=self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens,
                min_tokens=self.min_tokens,
                temperature=self.temperature,
                top_p=self.top_p,
                top_k=self.top_k,
                seed=self.seed,
                repetition_penalty=self.repetition_penalty,
                stop=[self.stop] if isinstance(self.stop, str) else list(self.stop or []),
            ),
            stream=self.stream,
            include_usage=bool(self.stream and self.stream_options and self.stream_options.include_usage),
            tools=[tool.model_dump(exclude_unset=True) for tool in self.tools] if parse_tools else None,
            parse_tools=parse_tools,
            template_kwargs=dict(self.chat_template_kwargs or {}),
            mm_kwargs=dict(self.mm_processor_kwargs or {}),
            return_token_ids=self.return_token_ids,
            constraint=constraint,
            constraint_param=param,
        )

    def _constraint(self, with_tools: bool, xml: bool = False) -> tuple[Constraint | None, str | None]:
        """The structured output the request asks for (and the field that asks), or (None, None)."""
        param = "response_format"
        try:
            fmt = None
            if isinstance(self.response_format, ResponseFormatJSONObject):
                fmt = Constraint.json_object()
            elif isinstance(self.response_format, ResponseFormatJSONSchema):
                fmt = Constraint.json_schema(self.response_format.json_schema.schema_)
            elif self.structured_outputs is not None:
                param, so = "structured_outputs", self.structured_outputs
                if so.json_ is not None:
                    fmt = Constraint.json_schema(so.json_)
                elif so.regex is not None:
                    fmt = Constraint.regex(so.regex)
                elif so.choice is not None:
                    fmt = Constraint.choice(so.choice)
                elif so.grammar is not None:
                    fmt = Constraint.grammar(so.grammar)
                else:
                    fmt = Constraint.json_object()
            if not with_tools:
                return fmt, param if fmt is not None else None
            tools = [tool.model_dump(exclude_unset=True) for tool in self.tools or []]
            parallel = self.parallel_tool_calls is not False
            if self.tool_choice == "required" or isinstance(self.tool_choice, NamedToolChoice):
                names = [self.tool_choice.function.name] if isinstance(self.tool_choice, NamedToolChoice) else None
                param = "tool_choice"
                return Constraint.tool_calls(tools, names, parallel, xml), param
            if fmt is not None:  # auto: the format, or calls of the tools
                return fmt | Constraint.tool_calls(tools, None, parallel, xml), param
            param = "tools"
            strict = Constraint.tools_in_text(tools, xml)  # auto with strict tools: their calls' arguments held
            return strict, param if strict is not None else None
        except ConstraintError as exc:
            raise bad_request(str(exc), param, "invalid_constraint") from None


def _joined(content: TextContent) -> str:
    return content if isinstance(content, str) else "".join(part.text for part in content or [])


def _arguments(arguments: Any) -> Any:
    """A call's arguments as the chat template takes them: the JSON object the client's string
    holds, as a dict (as vLLM hands it over: Qwen3.5's template writes one <parameter=...> per key
    and cannot take a string; Qwen3-VL's writes a dict as the JSON it came from); other text as
    it is."""
    if not isinstance(arguments, str):  # the request gave an object already
        return arguments
    try:
        value = strict_json(arguments)
    except ValueError:  # InputError is one
        return arguments
    return value if isinstance(value, dict) else arguments


def _template_message(message, images: list[str], videos: list[str]) -> dict:
    """One message as transformers' chat template reads it; media urls appended in order."""
    if isinstance(message, UserMessage):
        if isinstance(message.content, str):
            return {"role": "user", "content": message.content}
        parts = []
        for part in message.content:
            if isinstance(part, TextPart):
                parts.append({"type": "text", "text": part.text})
            else:
                media = part.image_url if isinstance(part, ImagePart) else part.video_url
                (images if isinstance(part, ImagePart) else videos).append(media.url if isinstance(media, MediaURL) else media)
                parts.append({"type": "image" if isinstance(part, ImagePart) else "video"})
        return {"role": "user", "content": parts}
    if isinstance(message, SystemMessage):
        return {"role": "system", "content": _joined(message.content)}
    if isinstance(message, AssistantMessage):
        out = {"role": "assistant", "content": _joined(message.content)}
        if message.tool_calls:
            out["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.function.name, "arguments": _arguments(call.function.arguments)},
                }
                for call in message.tool_calls
            ]
        return out
    out = {"role": "tool", "content": _joined(message.content)}
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


def parse_chat_request(body: Any) -> ChatRequest:
    """A parsed JSON body as the engine takes it, or an APIError 400 naming the problem."""
    return ChatCompletionRequest.parse(body).to_chat_request()


# ---------------------------------------------------------------------- the responses, typed
class Error(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """Every 4xx and 5xx: OpenAI's error shape."""

    error: Error


class ResponseFunctionCall(BaseModel):
    name: str
    arguments: str = Field(description="JSON")


class ResponseToolCall(BaseModel):
    id: str
    type: Literal["function"]
    function: ResponseFunctionCall


class ResponseMessage(BaseModel):
    role: Literal["assistant"]
    content: str | None
    reasoning_content: str | None = Field(default=None, description="the model's thinking (Qwen3 <think>), when it wrote any")
    tool_calls: list[ResponseToolCall] | None = None


FinishReason = Literal["stop", "length", "tool_calls", "cancelled"]


class Choice(BaseModel):
    index: int
    message: ResponseMessage
    logprobs: None
    finish_reason: FinishReason
    token_ids: list[int] | None = Field(default=None, description="with return_token_ids")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    """The answer of a request without ``stream``."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    prompt_token_ids: list[int] | None = Field(default=None, description="with return_token_ids")


class DeltaToolCall(ResponseToolCall):
    index: int


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[DeltaToolCall] | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    logprobs: None
    finish_reason: FinishReason | None
    token_ids: list[int] | None = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a ``stream`` answer (``data: {chunk}``, then ``data: [DONE]``); an
    error during the stream is an ``ErrorResponse`` event."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    prompt_token_ids: list[int] | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    max_model_len: int | None = Field(default=None, description="prompt + answer tokens (once the model has loaded)")


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok", "loading", "error", "restarting"]
    model: str | None = None
    running: int | None = None
    waiting: int | None = None
    detail: str | None = None
    replica: str | None = None  # the Ray Serve replica that answered (serve --ray-replicas)


def too_long(prompt: int, completion: int | None, context: int) -> APIError:
    asked = f"{prompt} in the messages" + (f" and {completion} for the completion" if completion else "")
    return APIError(
        400,
        f"this model's context is {context} tokens, but the request needs {prompt + (completion or 1)} ({asked}); "
        "shorten the messages, use fewer or smaller images (mm_processor_kwargs.max_pixels), lower max_tokens, "
        "or start the server with a larger --max-model-len",
        param="messages",
        code="context_length_exceeded",
    )
