"""The commands, composed from the tiers (each imported only when its command runs, so that
``genai-qwen3vl chat`` never imports torch):

    genai-qwen3vl export ...      = builder_qwen3vl.py ...: export (genai_qwen3vl.export), optionally
                                    checked against transformers (genai_qwen3vl.verify)
    genai-qwen3vl chat ...        the chat sample (genai_qwen3vl.runtime)
    genai-qwen3vl serve OUT_DIR   an OpenAI-compatible server with a chat page (genai_qwen3vl.runtime.serve)
    genai-qwen3vl batch OUT_DIR   a folder or table of images and videos answered, resumably (genai_qwen3vl.runtime.batch)
    genai-qwen3vl demo ...        the built-in default job (all tiers)
    genai-qwen3vl info OUT_DIR    an exported folder's manifest and what it needs to run (genai_qwen3vl.model.folder)

Exit codes of export: 0 done (and, with --validate, every check passed), 2 a problem with the
input or the options (one line on stderr), 3 a validation check failed, 4 some validation
checks could not run here (and none failed), 1 an internal error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from typing import NoReturn

from .export_command import build_export_parser, export_main  # noqa: F401 (builder_qwen3vl.py, tests and benchmarks import them from here)
from .extras import EXTRA_MODULES, MissingExtraError, missing_extra, require_extra  # noqa: F401 (importable from here, as before)

PROGRAM = "genai-qwen3vl"


def main(argv: list[str] | None = None) -> int:
    """``genai-qwen3vl COMMAND ...``"""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {
        "export": ("export a checkpoint (the same as builder_qwen3vl.py)", _export),
        "chat": ("chat with an exported folder (images and videos)", _chat),
        "serve": ("serve an exported folder over an OpenAI-compatible API, with a chat page", _serve),
        "batch": ("answer a folder or a table of images and videos, resumably", _batch),
        "demo": ("make a tiny random Qwen3-VL, export it, run it, check it against transformers", _demo),
        "info": ("print an exported folder's manifest and what it needs to run", _info),
    }
    if not argv or argv[0] not in commands:
        parser = argparse.ArgumentParser(
            prog=PROGRAM,
            description="Qwen3-VL for stock onnxruntime-genai: export, chat, serve, batch, demo, info.",
            formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog="commands:\n"
            + "\n".join(f"  {name:<8} {text}" for name, (text, _) in commands.items())
            + f"\n\n'{PROGRAM} COMMAND --help' describes each.",
        )
        parser.add_argument("command", choices=list(commands))
        parser.parse_args(argv[:1])  # prints the usage or the error and exits
    name, rest = argv[0], argv[1:]
    return commands[name][1](rest, prog=f"{PROGRAM} {name}")


def _export(argv: list[str], prog: str) -> int:
    return export_main(argv, prog=prog, dashes=True)


def _chat(argv: list[str], prog: str) -> int:
    from .runtime.chat import main as chat_main

    return chat_main(argv, prog=prog)


def _serve(argv: list[str], prog: str) -> int:
    from .runtime.serve.main import main as serve_main

    return serve_main(argv, prog=prog)


def _batch(argv: list[str], prog: str) -> int:
    from .runtime.batch.command import main as batch_main

    return batch_main(argv, prog=prog)


def _info(argv: list[str], prog: str) -> int:
    from .info import main as info_main

    return info_main(argv, prog=prog)


def _demo(argv: list[str], prog: str) -> int:
    from .verify.demo import main as demo_main

    return demo_main(argv, prog=prog)


def exit_process(command: Callable[[], int]) -> NoReturn:
    """Run ``command`` as the whole life of this process and exit with its code. Once the command
    has decided (an export published and reported), a Ctrl-C during the interpreter's teardown
    is ignored: it cannot turn a finished command into a KeyboardInterrupt and exit -2."""
    rc = command()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(rc)


def console_main() -> NoReturn:
    """The ``genai-qwen3vl`` console script."""
    exit_process(main)


def builder_console() -> NoReturn:
    """The ``genai-qwen3vl-builder`` console script."""
    exit_process(lambda: export_main(prog="genai-qwen3vl-builder"))


if __name__ == "__main__":
    console_main()
