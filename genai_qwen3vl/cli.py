"""The commands, composed from the tiers (each imported only when its command runs, so that
``genai-qwen3vl chat`` never imports torch):

    genai-qwen3vl export ...      = builder_qwen3vl.py ...: export (genai_qwen3vl.export), optionally
                                    checked against transformers (genai_qwen3vl.verify)
    genai-qwen3vl chat ...        the chat sample (genai_qwen3vl.runtime)
    genai-qwen3vl serve OUT_DIR   an OpenAI-compatible server with a chat page (genai_qwen3vl.runtime.serve)
    genai-qwen3vl demo ...        the built-in default job (all tiers)

Exit codes of export: 0 done (and, with --validate, every check passed), 2 a problem with the
input or the options (one line on stderr), 3 a validation check failed, 4 some validation
checks could not run here (and none failed), 1 an internal error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from pathlib import Path

from .errors import OptionsError, Qwen3VLExportError
from .logs import configure_logging
from .runtime.flags import add_flag

PROGRAM = "genai-qwen3vl"

# The modules each extra brings (setup.py's EXPORT and VERIFY lists; a test keeps them in step).
EXTRA_MODULES = {
    "export": ("torch", "transformers", "onnx", "onnxscript", "onnx_ir", "safetensors", "huggingface_hub"),
    "verify": ("torch", "transformers", "onnx", "onnxscript", "onnx_ir", "safetensors", "huggingface_hub", "torchvision", "av"),
}


class MissingExtraError(Qwen3VLExportError):
    """A command needs an extra that this installation lacks."""

    def __init__(self, extra: str, module: str, what: str):
        super().__init__(f'{what} needs the {extra} extra ({module} is not installed): pip install "genai-qwen3vl[{extra}]"')


def _absent(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):  # a parent package that is missing, or a module without a spec
        return True


def require_extra(extra: str, what: str) -> None:
    """Raise MissingExtraError naming the first module of ``extra`` that is not installed."""
    for module in EXTRA_MODULES[extra]:
        if _absent(module):
            raise MissingExtraError(extra, module, what)


def missing_extra(exc: BaseException, what: str) -> MissingExtraError | None:
    """A MissingExtraError for an import of a module that is absent (not one that is installed but
    fails to import), naming the extra that brings it."""
    name = getattr(exc, "name", None)
    if not isinstance(exc, ModuleNotFoundError) or not name or not _absent(name.split(".")[0]):
        return None
    top = name.split(".")[0]
    extra = next((e for e, modules in EXTRA_MODULES.items() if top in modules), None)
    return None if extra is None else MissingExtraError(extra, top, what)


def build_export_parser(prog: str, dashes: bool = False) -> argparse.ArgumentParser:
    """``dashes``: the flags as genai-qwen3vl's commands spell them (--max-length); else as og's
    builder does (--max_length), which builder_qwen3vl.py keeps. Either spelling is accepted."""
    from .export.cli import DESCRIPTION, add_export_arguments

    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    add_export_arguments(parser, dashes)
    parser.add_argument(
        "--validate",
        action="store_true",
        help="after the export, check it against transformers (per artifact and end to end through og) "
        "and exit 3 if any difference exceeds the tolerance table (needs the verify extra)",
    )
    add_flag(
        parser, "validate_only", dashes=dashes, action="store_true", help="only check an existing output folder -o against the checkpoint"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    return parser


def export_main(argv: list[str] | None = None, prog: str = "builder_qwen3vl.py", dashes: bool = False) -> int:
    """``builder_qwen3vl.py`` / ``genai-qwen3vl export``."""
    args = build_export_parser(prog, dashes).parse_args(argv)
    configure_logging(args.verbose)
    published = None
    action = "exporting a checkpoint"  # what a missing module turns up in
    try:
        if args.validate_only or args.validate:
            require_extra("verify", "--validate_only" if args.validate_only else "--validate")
        require_extra("export", action)
        if args.validate_only:
            action = "--validate_only"
            return _validate_only(args)
        from .export.cli import options_from_args
        from .export.pipeline import run

        options = options_from_args(args)
        out = published = run(options)
        if args.validate:
            from .export.checkpoint import resolve_checkpoint

            action = "--validate"
            return _validate(out, resolve_checkpoint(options), options.precision)
    except Qwen3VLExportError as exc:
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        replaced = None
        if hasattr(exc, "published"):  # ExportInterrupted: a Ctrl-C once the export was published
            published, replaced = exc.published, exc.replaced
            unchecked = ", its validation did not run" if args.validate else ""
        else:
            unchecked = ", its validation did not finish" if args.validate else ""
        if replaced is not None and replaced.exists():
            unchecked += f"; delete {replaced}, what is left of the folder it replaced"
        if published is not None:
            print(f"interrupted: the export at {published} is complete{unchecked}", file=sys.stderr)
        else:
            print("interrupted: nothing was written to the output folder", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not a user error: one line, the traceback under --verbose
        if args.verbose:
            raise
        if (missing := missing_extra(exc, action)) is not None:
            print(f"error: {missing}", file=sys.stderr)
            return 2
        print(f"error: internal error ({type(exc).__name__}: {exc}); rerun with --verbose for the traceback", file=sys.stderr)
        return 1
    return 0


def _validate_only(args: argparse.Namespace) -> int:
    from .export.checkpoint import resolve_checkpoint
    from .export.options import ExportOptions
    from .verify.validate import exported_target

    out = args.output
    if not (out / "genai_config.json").is_file():
        raise OptionsError(f"--validate_only: {out} holds no exported model (no genai_config.json)")
    target = exported_target(out)
    if args.precision is not None and args.precision != target.precision:
        raise OptionsError(f"--validate_only: -p {args.precision} given, but {out} holds a -p {target.precision} export")
    options = ExportOptions(
        output_dir=out,
        precision=target.precision,
        execution_provider=target.provider,
        input_dir=args.input,
        model_name=args.model_name,
        cache_dir=args.cache_dir,
        overwrite=True,
    )
    return _validate(out, resolve_checkpoint(options), target.precision)


def _validate(out: Path, checkpoint: Path, precision: str) -> int:
    from .verify.validate import format_rows, summarize, validate_export

    logging.getLogger("genai_qwen3vl").info("validating %s against transformers ...", out)
    rows = validate_export(out, checkpoint)
    print(format_rows(rows))
    code, message = summarize(rows)
    print(message, file=sys.stderr if code else sys.stdout)
    return code


def main(argv: list[str] | None = None) -> int:
    """``genai-qwen3vl COMMAND ...``"""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {
        "export": ("export a checkpoint (the same as builder_qwen3vl.py)", _export),
        "chat": ("chat with an exported folder (images and videos)", _chat),
        "serve": ("serve an exported folder over an OpenAI-compatible API, with a chat page", _serve),
        "demo": ("make a tiny random Qwen3-VL, export it, run it, check it against transformers", _demo),
    }
    if not argv or argv[0] not in commands:
        parser = argparse.ArgumentParser(
            prog=PROGRAM,
            description="Qwen3-VL for stock onnxruntime-genai: export, chat, serve, demo.",
            formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog="commands:\n" + "\n".join(f"  {name:<8} {text}" for name, (text, _) in commands.items())
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


def _demo(argv: list[str], prog: str) -> int:
    from .verify.demo import main as demo_main

    return demo_main(argv, prog=prog)


def builder_console() -> int:
    """The ``genai-qwen3vl-builder`` console script."""
    return export_main(prog="genai-qwen3vl-builder")


if __name__ == "__main__":
    sys.exit(main())
