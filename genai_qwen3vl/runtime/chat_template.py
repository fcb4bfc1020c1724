"""The checkpoint's chat template, found and rendered as transformers renders it (jinja2 in its
sandbox, with its ``tojson``, ``raise_exception`` and ``strftime_now``)."""

from __future__ import annotations

import datetime
import json
from pathlib import Path


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


def render_chat_template(template: str, messages: list[dict], add_generation_prompt: bool = True, **kwargs) -> str:
    """What ``processor.apply_chat_template(messages, tokenize=False, ...)`` returns."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda x, indent=None, separators=None, sort_keys=False: json.dumps(
        x, ensure_ascii=False, indent=indent, separators=separators, sort_keys=sort_keys
    )

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt, **kwargs)
