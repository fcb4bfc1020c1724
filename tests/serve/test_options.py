"""``ServeOptions`` is the one source of the serve flags' defaults: the command line parsed with
no flags gives exactly the options' defaults, and every option is a flag."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from genai_qwen3vl.runtime.serve.main import API_KEY_ENV, build_parser
from genai_qwen3vl.runtime.serve.options import ServeOptions


def test_every_flag_default_is_the_options_default(monkeypatch):
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    args = vars(build_parser().parse_args(["folder"]))
    fields = {field.name: field.default for field in dataclasses.fields(ServeOptions)}
    assert set(fields) <= set(args)
    assert {name: args[name] for name in fields if name != "model_dir"} == {k: v for k, v in fields.items() if k != "model_dir"}
    assert args["model_dir"] == Path("folder")


def test_a_changed_default_reaches_the_flag(monkeypatch):
    """The parser reads the defaults when it is built, not a copy of them."""
    import genai_qwen3vl.runtime.serve.main as main

    monkeypatch.setattr(main, "D", dataclasses.replace(main.D, max_queue=3, timeout=12.5))
    args = build_parser().parse_args(["folder"])
    assert (args.max_queue, args.timeout) == (3, 12.5)
    assert "(default 3)" in build_parser().format_help()
