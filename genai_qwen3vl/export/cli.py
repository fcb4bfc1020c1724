"""The export's command-line options, in the style of og's builder:

    (-m HUB_ID | -i LOCAL_DIR) -o OUT_DIR -p PRECISION -e EP [--cache_dir DIR] ...

``genai_qwen3vl.cli`` builds the command (``builder_qwen3vl.py``, ``genai-qwen3vl export``)
from these and adds ``--validate``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..model.precisions import (
    DEFAULT_INT4_BLOCK_SIZE,
    DEFAULT_INT4_RECIPE,
    EXECUTION_PROVIDERS,
    FLOAT_DTYPES,
    INT4_ACCURACY_LEVELS,
    INT4_BLOCK_SIZES,
    INT4_RECIPES,
    PRECISIONS,
    VISION_QUANT,
)
from .options import DEFAULT_MAX_LENGTH, ExportOptions

DESCRIPTION = (
    "Export a Hugging Face Qwen3-VL checkpoint to a folder that stock onnxruntime-genai runs "
    "(vision.onnx, embedding.onnx, model.onnx with DeepStack, genai_config.json, processor_config.json, tokenizer)."
)


def add_export_arguments(parser: argparse.ArgumentParser, dashes: bool = False) -> None:
    """The export's flags; ``dashes``: spelled --max-length (genai-qwen3vl export), else og's
    --max_length (builder_qwen3vl.py). The other spelling is accepted, unlisted."""
    from ..runtime.flags import add_flag

    def flag(name: str, *short: str, on=parser, **kwargs) -> None:
        add_flag(on, name, *short, dashes=dashes, **kwargs)

    source = parser.add_mutually_exclusive_group(required=True)
    flag("model_name", "-m", on=source, help="Hugging Face hub id, e.g. Qwen/Qwen3-VL-2B-Instruct")
    source.add_argument("-i", "--input", type=Path, help="local Hugging Face checkpoint folder")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder (created; must be empty)")
    parser.add_argument(
        "-p",
        "--precision",
        default=None,
        choices=list(PRECISIONS),
        help="weight precision (default fp32; with --validate_only: the folder's)",
    )
    flag("execution_provider", "-e", default="cpu", choices=EXECUTION_PROVIDERS, help="target execution provider (default cpu)")
    flag("cache_dir", "-c", type=Path, default=None, help="download cache for -m (default: huggingface_hub's)")
    flag(
        "max_length",
        type=int,
        default=DEFAULT_MAX_LENGTH,
        help=f"default search max_length in genai_config.json (prompt + answer tokens; default {DEFAULT_MAX_LENGTH})",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    flag(
        "int4_block_size",
        type=int,
        default=DEFAULT_INT4_BLOCK_SIZE,
        choices=INT4_BLOCK_SIZES,
        help=f"-p int4: quantization block size (default {DEFAULT_INT4_BLOCK_SIZE})",
    )
    flag(
        "int4_accuracy_level",
        type=int,
        default=None,
        choices=INT4_ACCURACY_LEVELS,
        help="-p int4: MatMulNBits accuracy_level; 1 = fp32 activations (most accurate), 4 = int8 activations "
        "(fastest on CPU; the CPU default), 0 = the provider's choice (the CUDA default)",
    )
    flag(
        "int4_recipe",
        default=DEFAULT_INT4_RECIPE,
        choices=list(INT4_RECIPES),
        help="-p int4 -e cpu: rtn = og's own int4 (every weight 4-bit); mixed = 8 bits for the LM head, attention v "
        f"and MLP down, 4 elsewhere (default {DEFAULT_INT4_RECIPE}; docs/quantization.md)",
    )
    flag(
        "vision_precision",
        default=None,
        choices=FLOAT_DTYPES,
        help="dtype of the vision and embedding graphs (default: fp32 on CPU, the decoder's fp16/bf16 on CUDA)",
    )
    flag(
        "vision_quant",
        default=None,
        choices=list(VISION_QUANT),
        help="-e cpu: store the vision tower's Linear weights in 8 or 4 bits (blocks of 32, MatMulNBits), "
        "a quarter or an eighth of their fp32 memory (default: fp32; docs/quantization.md measures the cost)",
    )
    flag(
        "full_prefill_logits",
        action="store_true",
        help="keep og's LM head over every prompt position (default: the last position only, as og samples from it)",
    )
    flag(
        "trust_remote_code",
        action="store_true",
        help="let og's builder run code shipped with the checkpoint (never needed for Qwen3-VL; off by default)",
    )


def options_from_args(args: argparse.Namespace) -> ExportOptions:
    return ExportOptions(
        output_dir=args.output,
        precision=args.precision or "fp32",
        execution_provider=args.execution_provider,
        input_dir=args.input,
        model_name=args.model_name,
        cache_dir=args.cache_dir,
        max_length=args.max_length,
        int4_block_size=args.int4_block_size,
        int4_accuracy_level=args.int4_accuracy_level,
        int4_recipe=args.int4_recipe,
        vision_precision=args.vision_precision,
        vision_quant=args.vision_quant,
        trust_remote_code=args.trust_remote_code,
        trim_prefill_logits=not args.full_prefill_logits,
        overwrite=args.overwrite,
    )
