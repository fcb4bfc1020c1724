"""Command line: parse -> ExportOptions -> pipeline.run(), in the style of og's builder.

    python builder_qwen3vl.py (-m HUB_ID | -i LOCAL_DIR) -o OUT_DIR -p PRECISION -e EP [--cache_dir DIR]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .errors import Qwen3VLExportError
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
        overwrite=args.overwrite,
        int4_block_size=args.int4_block_size,
        int4_accuracy_level=args.int4_accuracy_level,
        vision_precision=args.vision_precision,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:
        for noisy in ("transformers", "torch", "onnxscript", "onnx_ir", "huggingface_hub", "httpx"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        from .pipeline import run

        run(options_from_args(args))
    except Qwen3VLExportError as exc:
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing was written to the output folder", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
