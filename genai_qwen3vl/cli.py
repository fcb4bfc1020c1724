"""Command line: parse -> ExportOptions -> pipeline.run(), in the style of og's builder.

    python builder_qwen3vl.py (-m HUB_ID | -i LOCAL_DIR) -o OUT_DIR -p PRECISION -e EP [--cache_dir DIR]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .errors import OptionsError, Qwen3VLExportError
from .logs import configure_logging
from .options import (
    DEFAULT_MAX_LENGTH,
    EXECUTION_PROVIDERS,
    FLOAT_DTYPES,
    INT4_ACCURACY_LEVELS,
    INT4_BLOCK_SIZES,
    PRECISIONS,
    ExportOptions,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="builder_qwen3vl.py",
        description="Export a Hugging Face Qwen3-VL checkpoint to a folder that stock onnxruntime-genai runs "
        "(vision.onnx, embedding.onnx, model.onnx with DeepStack, genai_config.json, processor_config.json, tokenizer).",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("-m", "--model_name", help="Hugging Face hub id, e.g. Qwen/Qwen3-VL-2B-Instruct")
    source.add_argument("-i", "--input", type=Path, help="local Hugging Face checkpoint folder")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder (created; must be empty)")
    parser.add_argument("-p", "--precision", default="fp32", choices=PRECISIONS, help="weight precision (default fp32)")
    parser.add_argument(
        "-e", "--execution_provider", default="cpu", choices=EXECUTION_PROVIDERS, help="target execution provider (default cpu)"
    )
    parser.add_argument("-c", "--cache_dir", type=Path, default=None, help="download cache for -m (default: huggingface_hub's)")
    parser.add_argument(
        "--max_length",
        type=int,
        default=DEFAULT_MAX_LENGTH,
        help=f"default search max_length in genai_config.json (prompt + answer tokens; default {DEFAULT_MAX_LENGTH})",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    parser.add_argument(
        "--int4_block_size", type=int, default=32, choices=INT4_BLOCK_SIZES, help="-p int4: quantization block size (default 32)"
    )
    parser.add_argument(
        "--int4_accuracy_level",
        type=int,
        default=None,
        choices=INT4_ACCURACY_LEVELS,
        help="-p int4: MatMulNBits accuracy_level; 1 = fp32 activations (most accurate), 4 = int8 activations "
        "(fastest on CPU; the CPU default), 0 = the provider's choice (the CUDA default)",
    )
    parser.add_argument(
        "--vision_precision",
        default=None,
        choices=FLOAT_DTYPES,
        help="dtype of the vision and embedding graphs (default: fp32 on CPU, the decoder's fp16/bf16 on CUDA)",
    )
    parser.add_argument(
        "--full_prefill_logits",
        action="store_true",
        help="keep og's LM head over every prompt position (default: the last position only, as og samples from it)",
    )
    parser.add_argument(
        "--validate",
        action="store_true",
        help="after the export, check it against transformers (per artifact and end to end through og) "
        "and exit non-zero if any difference exceeds the tolerance table",
    )
    parser.add_argument(
        "--validate_only", action="store_true", help="only check an existing output folder -o against the checkpoint"
    )
    parser.add_argument(
        "--trust_remote_code",
        action="store_true",
        help="let og's builder run code shipped with the checkpoint (never needed for Qwen3-VL; off by default)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    return parser


def options_from_args(args: argparse.Namespace) -> ExportOptions:
    return ExportOptions(
        output_dir=args.output,
        precision=args.precision,
        execution_provider=args.execution_provider,
        input_dir=args.input,
        model_name=args.model_name,
        cache_dir=args.cache_dir,
        max_length=args.max_length,
        int4_block_size=args.int4_block_size,
        int4_accuracy_level=args.int4_accuracy_level,
        vision_precision=args.vision_precision,
        trust_remote_code=args.trust_remote_code,
        prune_prefill_logits=not args.full_prefill_logits,
        overwrite=args.overwrite or args.validate_only,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    try:
        from .pipeline import resolve_checkpoint, run

        options = options_from_args(args)
        if args.validate_only:
            if not (options.output_dir / "genai_config.json").is_file():
                raise OptionsError(f"--validate_only: {options.output_dir} holds no exported model (no genai_config.json)")
            out = options.output_dir
        else:
            out = run(options)
        if args.validate or args.validate_only:
            return _validate(out, resolve_checkpoint(options), options.precision)
    except Qwen3VLExportError as exc:
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing was written to the output folder", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not a user error: one line, the traceback under --verbose
        if args.verbose:
            raise
        print(f"error: internal error ({type(exc).__name__}: {exc}); rerun with --verbose for the traceback", file=sys.stderr)
        return 1
    return 0


def _validate(out: Path, checkpoint: Path, precision: str) -> int:
    from .validate import format_rows, validate_export

    logging.getLogger("genai_qwen3vl").info("validating %s against transformers ...", out)
    rows = validate_export(out, checkpoint, precision)
    print(format_rows(rows))
    failed = [r for r in rows if not r.passed]
    if failed:
        print(f"validation FAILED: {len(failed)} of {len(rows)} checks exceed the tolerance", file=sys.stderr)
        return 3
    print(f"validation passed: {sum(r.max_diff is not None for r in rows)} checks within tolerance")
    return 0


if __name__ == "__main__":
    sys.exit(main())
