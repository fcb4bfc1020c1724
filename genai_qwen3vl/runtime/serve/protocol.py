"""``POST /v1/chat/completions`` requests: OpenAI's JSON checked field by field and turned into
what the checkpoint's chat template and our processor take.

OpenAI's message parts become transformers' (the shape Qwen3-VL's template reads):

    {"type": "text", "text": ...}                        -> {"type": "text", "text": ...}
    {"type": "image_url", "image_url": {"url": ...}}     -> {"type": "image"}   + the url, in order
    {"type": "video_url", "video_url": {"url": ...}}     -> {"type": "video"}   + the url, in order (vLLM's name)

Assistant ``tool_calls`` keep OpenAI's shape with ``arguments`` parsed from its JSON string (as
vLLM hands them to Qwen's template); ``tool`` messages keep their text. Parameters of OpenAI's API
that stock onnxruntime-genai cannot honour are refused with a 400 naming them, not ignored.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from pydantic_core import from_json

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
        for needle, why in (("recursion limit", "nested more than 200 levels deep"), ("out of range", "an integer of 4300+ digits"),
                            ("hex escape", "a \\ud800-\\udfff escape that is not a surrogate pair")):
            if needle in text:
                raise ValueError(f"{text}: {why}") from None
        if text.startswith(("expected value", "invalid number")) and (b"NaN" in raw or b"Infinity" in raw):
            raise ValueError(f"{text}: NaN and Infinity are not JSON; send finite numbers") from None
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


def _user_content(content: Any, where: str, images: list[str], videos: list[str]):
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
        elif kind == "image_url":
            images.append(_url(part, "image_url", here))
            parts.append({"type": "image"})
        elif kind == "video_url":
            videos.append(_url(part, "video_url", here))
            parts.append({"type": "video"})
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


def _messages(raw: Any) -> tuple[list[dict], list[str], list[str]]:
    if not isinstance(raw, list) or not raw:
        raise bad_request("'messages' must be a non-empty list", "messages")
    messages, images, videos = [], [], []
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise bad_request(f"{where} must be an object with 'role' and 'content'", "messages")
        role = message.get("role")
        if role not in ROLES:
            raise bad_request(f"{where}.role must be one of {', '.join(ROLES)}, got {quote(role)}", "messages")
        content = message.get("content")
        if role == "user":
            messages.append({"role": "user", "content": _user_content(content, where, images, videos)})
        elif role in ("system", "developer"):
            messages.append({"role": "system", "content": _text_of(content, where)})
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
    return messages, images, videos


def _stop(value: Any) -> list[str]:
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise bad_request("'stop' must be a non-empty string or a list of them", "stop")
    if len(stops) > MAX_STOP:
        raise bad_request(f"'stop' has {len(stops)} sequences; at most {MAX_STOP}", "stop")
    return stops


def _tools(body: dict) -> tuple[list[dict] | None, bool]:
    """(tools for the template, whether to parse tool calls out of the answer)."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if tools is None:
        if choice not in (None, "none", "auto"):
            raise bad_request("'tool_choice' needs 'tools'", "tool_choice")
        return None, False
    if not isinstance(tools, list) or not all(isinstance(t, dict) and t.get("type") == "function" and isinstance(t.get("function"), dict)
                                              and isinstance(t["function"].get("name"), str) for t in tools):
        raise bad_request("'tools' must be a list of {'type': 'function', 'function': {'name', 'description', 'parameters'}}", "tools")
    if choice in (None, "auto"):
        return tools, True
    if choice == "none":
        return None, False
    raise unsupported(
        "tool_choice",
        "onnxruntime-genai 0.18 has no constrained decoding, so a call cannot be forced; use 'auto' (the model decides) or 'none'",
    )


def parse_chat_request(body: Any) -> ChatRequest:
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise bad_request("'model' must be a string", "model")
    if _number(body, "n", Bound(int, 1)) not in (None, 1):
        raise unsupported("n", "one choice per request (onnxruntime-genai 0.18 runs one sequence per generator); send n requests instead")
    if body.get("logprobs") or body.get("top_logprobs"):
        raise unsupported("logprobs", "the server returns no log probabilities")
    for key in ("presence_penalty", "frequency_penalty"):
        if _number(body, key, Bound(float)) not in (None, 0.0):
            raise unsupported(key, "onnxruntime-genai 0.18 has no such penalty; use 'repetition_penalty'")
    if body.get("logit_bias"):
        raise unsupported("logit_bias", "onnxruntime-genai 0.18 cannot bias single tokens")
    fmt = body.get("response_format")
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") != "text"):
        raise unsupported("response_format", "onnxruntime-genai 0.18 has no constrained decoding; only {'type': 'text'}")
    if body.get("max_tokens") is not None and body.get("max_completion_tokens") is not None:
        raise bad_request("give 'max_completion_tokens' or 'max_tokens', not both", "max_tokens")
    max_key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    sampling = Sampling(
        max_tokens=_number(body, max_key, Bound(int, 1)),
        min_tokens=_number(body, "min_tokens", Bound(int, 0)),
        temperature=_sampled(body, "temperature"),
        top_p=_sampled(body, "top_p"),
        top_k=_sampled(body, "top_k"),
        seed=_sampled(body, "seed"),
        repetition_penalty=_sampled(body, "repetition_penalty"),
        stop=_stop(body.get("stop")),
    )
    if sampling.min_tokens and sampling.max_tokens is not None and sampling.min_tokens > sampling.max_tokens:
        raise bad_request(f"'min_tokens' ({sampling.min_tokens}) is above '{max_key}' ({sampling.max_tokens})", "min_tokens")
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
    messages, images, videos = _messages(body.get("messages"))
    tools, parse_tools = _tools(body)
    return ChatRequest(
        model=model,
        messages=messages,
        images=images,
        videos=videos,
        sampling=sampling,
        stream=stream,
        include_usage=bool(stream and options.get("include_usage")),
        tools=tools,
        parse_tools=parse_tools,
        template_kwargs=dict(template_kwargs),
        mm_kwargs=dict(mm_kwargs),
        return_token_ids=bool(body.get("return_token_ids")),
    )


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
