"""The checkpoint's chat template, found and rendered as transformers renders it (jinja2 in its
sandbox, with its ``tojson``, ``raise_exception`` and ``strftime_now``).

A checkpoint's template is code: the server renders it under ``TemplateLimits`` (jinja2's sandbox
stops escapes, not loops). Output is counted as ``Template.generate()`` yields it; a line tracer
on the template's own frames (its compiled Python) checks the clock and the request's cancel flag
at every line, empty loops included; sizes that one C call would allocate at once (``'x' * n``,
``s.ljust(n)``, ``|center(n)``, ``'%99999999d' % 1``, integers past MAX_INT_BITS) are checked before
the call; ``tojson`` encodes piece by piece under the same budget.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import re
import sys
import time
from pathlib import Path

from . import budget


class TemplateLimitError(Exception):
    """The template ran past its time or output budget (the checkpoint's template is at fault)."""


@dataclasses.dataclass(frozen=True)
class TemplateLimits:
    seconds: float = 5.0
    max_chars: int = 1 << 22


def find_chat_template(folder: Path) -> str | None:
    """``chat_template.jinja``, or the ``chat_template`` of chat_template.json / tokenizer_config.json."""
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text(encoding="utf-8")
    for name in ("chat_template.json", "tokenizer_config.json"):
        if (folder / name).is_file():
            template = json.loads((folder / name).read_text(encoding="utf-8")).get("chat_template")
            if template:
                return template
    return None


def xml_tool_calls(template: str | None) -> bool:
    """Whether the template writes tool calls in Qwen3.5's XML layout (``<function=NAME>`` and
    ``<parameter=P>`` inside ``<tool_call>``) rather than Qwen3-VL's JSON: what llama-server
    reads from a template's text to pick its parser."""
    return bool(template) and all(tag in template for tag in ("<tool_call>", "<function=", "<parameter="))


def render_chat_template(
    template: str, messages: list[dict], add_generation_prompt: bool = True, limits: TemplateLimits | None = None, /, **kwargs
) -> str:
    """What ``processor.apply_chat_template(messages, tokenize=False, ...)`` returns; with
    ``limits``, TemplateLimitError past them, and budget.Cancelled when the current preparation
    budget (budget.py) is spent or cancelled."""
    import jinja2

    env = _environment(jinja2, limits)
    compiled = env.from_string(template)
    if limits is None:
        return compiled.render(messages=messages, add_generation_prompt=add_generation_prompt, **kwargs)
    return _render_bounded(compiled, limits, dict(messages=messages, add_generation_prompt=add_generation_prompt, **kwargs))


def _render_bounded(compiled, limits: TemplateLimits, variables: dict) -> str:
    deadline = time.monotonic() + limits.seconds
    outer = budget.current()
    code_name = compiled.root_render_func.__code__.co_filename  # "<template>": the template's compiled frames

    def check() -> None:
        if outer is not None:
            outer.check()
        if time.monotonic() > deadline:
            raise TemplateLimitError(f"the chat template ran longer than {limits.seconds:g} s")

    def on_line(frame, event, arg):
        check()
        return on_line

    def on_call(frame, event, arg):  # only the template's own frames are traced line by line
        return on_line if frame.f_code.co_filename == code_name else None

    compiled.environment.check = check
    out, size = [], 0
    previous = sys.gettrace()
    sys.settrace(on_call)
    try:
        for chunk in compiled.generate(**variables):
            size += len(chunk)
            if size > limits.max_chars:
                raise TemplateLimitError(f"the chat template wrote more than {limits.max_chars} characters")
            out.append(chunk)
    finally:
        sys.settrace(previous)
    return "".join(out)


def _too_big(value, limit: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) > limit


# The largest integer a bounded template may build or divide (bits; 2**65536 has ~19,700 digits, past
# what str() prints): Python's int * and ** are single C calls, and // and % are quadratic in size.
MAX_INT_BITS = 1 << 16


def _int_too_big(operator: str, left, right) -> bool:
    if not (isinstance(left, int) and isinstance(right, int)):
        return False
    if operator == "**":
        return right > 0 and left.bit_length() * right > MAX_INT_BITS
    if operator == "*":
        return left.bit_length() + right.bit_length() > MAX_INT_BITS
    return max(left.bit_length(), right.bit_length()) > MAX_INT_BITS


def _big_width(text, limit: int) -> bool:
    """A %-format or str.format string with a number in it over ``limit`` (a field width or precision
    that one C call would allocate at once, ``'%99999999d'``, ``'{:>99999999}'``)."""
    return isinstance(text, str) and any(int(d) > limit for d in re.findall(r"\d{%d,}" % len(str(limit)), text))


def _json_bounded(value, env, indent=None, separators=None, sort_keys=False) -> str:
    """``json.dumps`` as transformers' ``tojson`` calls it, encoded piece by piece, stopped past
    ``env.max_chars`` characters or the render's clock (``env.check``); an indent that Python's
    deepest nesting would repeat past the limit is refused."""
    limit = env.max_chars
    width = len(indent) if isinstance(indent, str) else (indent or 0)
    if width * sys.getrecursionlimit() > limit:
        raise TemplateLimitError(f"the chat template called |tojson with an indent over {limit // sys.getrecursionlimit()}")
    encoder = json.JSONEncoder(ensure_ascii=False, indent=indent, separators=separators, sort_keys=sort_keys)
    out, size = [], 0
    for i, chunk in enumerate(encoder.iterencode(value)):
        size += len(chunk)
        if i % 1024 == 0 and env.check is not None:
            env.check()
        if size > limit:
            raise TemplateLimitError(f"the chat template built a value longer than {limit} items")
        out.append(chunk)
    return "".join(out)


@functools.lru_cache(maxsize=None)
def _sandbox_class(jinja2):
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Sandbox(ImmutableSandboxedEnvironment):
        """jinja2's immutable sandbox, plus size checks before calls and operators that allocate."""

        intercepted_binops = frozenset(["*", "**", "+", "-", "//", "%"])
        max_chars: int | None = None
        check = None  # the render's clock and cancel check, for helpers that loop outside the template's frames

        def _check_size(self, value) -> None:
            if self.max_chars is not None and hasattr(value, "__len__") and len(value) > self.max_chars:
                raise TemplateLimitError(f"the chat template built a value longer than {self.max_chars} items")

        def call_binop(self, context, operator, left, right):
            limit = self.max_chars
            if limit is not None:
                if operator == "**" and isinstance(left, (int, float)) and _too_big(right, 4096):
                    raise TemplateLimitError(f"the chat template raised a number to the power {right}")
                if _int_too_big(operator, left, right):
                    raise TemplateLimitError(f"the chat template built an integer over {MAX_INT_BITS} bits")
                values = right if isinstance(right, tuple) else (right,)  # '%*d' takes its width from them
                if operator == "%" and (_big_width(left, limit) or any(_too_big(a, limit) for a in values)):
                    raise TemplateLimitError(f"the chat template formatted a field wider than {limit}")
                if operator == "*":
                    for seq, n in ((left, right), (right, left)):
                        if hasattr(seq, "__len__") and isinstance(n, int) and len(seq) * n > limit:
                            raise TemplateLimitError(f"the chat template built a value longer than {limit} items")
                if operator == "+" and hasattr(left, "__len__") and hasattr(right, "__len__"):
                    if len(left) + len(right) > limit:
                        raise TemplateLimitError(f"the chat template built a value longer than {limit} items")
            return super().call_binop(context, operator, left, right)

        def wrap_str_format(self, value):  # jinja2 wraps str.format / format_map as it looks them up
            if self.max_chars is not None and _big_width(getattr(value, "__self__", None), self.max_chars):
                raise TemplateLimitError(f"the chat template formatted a field wider than {self.max_chars}")
            return super().wrap_str_format(value)

        def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 - jinja2's own signature
            limit = __self.max_chars
            if limit is not None and any(_too_big(a, limit) for a in (*args, *kwargs.values())):
                raise TemplateLimitError(f"the chat template called {getattr(__obj, '__name__', 'a function')} with a size over {limit}")
            result = super().call(__context, __obj, *args, **kwargs)
            __self._check_size(result)
            return result

    return Sandbox


def _bounded_filter(function, env):
    @functools.wraps(function)
    def bounded(*args, **kwargs):
        limit = env.max_chars
        if any(_too_big(a, limit) for a in (*args, *kwargs.values())):
            raise TemplateLimitError(f"the chat template called |{function.__name__} with a size over {limit}")
        if function.__name__ == "do_format" and args and _big_width(args[0], limit):
            raise TemplateLimitError(f"the chat template formatted a field wider than {limit}")
        result = function(*args, **kwargs)
        if isinstance(result, str):
            env._check_size(result)
        return result

    return bounded


def _environment(jinja2, limits: TemplateLimits | None):
    env = _sandbox_class(jinja2)(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda x, indent=None, separators=None, sort_keys=False: json.dumps(
        x, ensure_ascii=False, indent=indent, separators=separators, sort_keys=sort_keys
    )

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    if limits is not None:  # transformers' helpers above are registered first, so they are bounded too
        env.max_chars = limits.max_chars

        def tojson(x, indent=None, separators=None, sort_keys=False):
            return _json_bounded(x, env, indent, separators, sort_keys)

        env.filters["tojson"] = tojson
        env.filters = {name: _bounded_filter(f, env) for name, f in env.filters.items()}
    return env
