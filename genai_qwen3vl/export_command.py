"""The export command (``builder_qwen3vl.py``, ``genai-qwen3vl export``): parse, export
(``genai_qwen3vl.export``), optionally check the folder against transformers
(``genai_qwen3vl.verify``), each tier imported only when the command runs.

Exit codes: 0 done (and, with --validate, every check passed), 2 a problem with the input or the
options (one line on stderr), 3 a validation check failed, 4 some validation checks could not run
here (and none failed), 1 an internal error, 130 interrupted.

Its own module, not ``cli.py``'s, so that the demo (``verify/demo.py``), which exports with it,
and ``cli.py``, which dispatches to the demo, do not import each other.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .errors import FolderError, OptionsError, Qwen3VLError
from .extras import missing_extra, require_extra
from .logs import configure_logging
from .runtime.flags import add_flag


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
            return _validate(out, resolve_checkpoint(options), options.precision, record=True)
    except Qwen3VLError as exc:
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
    from .model.folder import MANIFEST, ExportedFolder
    from .verify.validate import exported_target

    out = args.output
    try:
        folder = ExportedFolder.open(out)
    except FolderError as exc:
        raise OptionsError(f"--validate_only: {exc}") from None
    if folder.manifest is None:
        logging.getLogger("genai_qwen3vl").warning(
            "warning: %s has no %s (exported by an older genai-qwen3vl): its precision is read from the graphs, "
            "and what made it is not recorded",
            out,
            MANIFEST,
        )
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


def _validate(out: Path, checkpoint: Path, precision: str, record: bool = False) -> int:
    """Check ``out`` against transformers and print the table; ``record`` (--validate, right
    after the export): put the summary into its manifest.json. --validate_only writes nothing
    into the folder it checks."""
    from .model.folder import MANIFEST
    from .verify.validate import format_rows, record_summary, summarize, validate_export

    log = logging.getLogger("genai_qwen3vl")
    log.info("validating %s against transformers ...", out)
    rows = validate_export(out, checkpoint)
    print(format_rows(rows))
    code, message = summarize(rows)
    print(message, file=sys.stderr if code else sys.stdout)
    try:
        if record and record_summary(out, rows):
            log.info("the result is recorded in %s", out / MANIFEST)
    except (OSError, FolderError) as exc:  # the result stands, unrecorded
        log.warning("warning: the result could not be recorded in %s: %s", out / MANIFEST, exc)
    return code
