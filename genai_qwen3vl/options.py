"""Typed, frozen export options (what the command line asked for)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .errors import OptionsError

PRECISIONS = ("fp32", "fp16", "bf16", "int4")
EXECUTION_PROVIDERS = ("cpu", "cuda")
FLOAT_DTYPES = ("fp32", "fp16", "bf16")
# (precision, execution provider) pairs this version exports, and why the others are refused.
SUPPORTED_TARGETS = frozenset(
    {("fp32", "cpu"), ("int4", "cpu"), ("fp32", "cuda"), ("fp16", "cuda"), ("bf16", "cuda"), ("int4", "cuda")}
)
UNSUPPORTED_REASONS = {
    ("fp16", "cpu"): "onnxruntime's CPU provider has no fp16 kernels for most of these graphs; use -p fp32 or -p int4 on CPU",
    ("bf16", "cpu"): "onnxruntime's CPU provider has no bf16 kernels for most of these graphs; use -p fp32 or -p int4 on CPU",
}
INT4_BLOCK_SIZES = (16, 32, 64, 128, 256)
INT4_ACCURACY_LEVELS = (0, 1, 2, 3, 4)

DEFAULT_MAX_LENGTH = 8192


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    output_dir: Path
    precision: str = "fp32"
    execution_provider: str = "cpu"
    input_dir: Path | None = None
    model_name: str | None = None
    cache_dir: Path | None = None
    # og's default max_length follows the 262144 context and then pre-allocates the whole KV
    # cache; the emitted search.max_length is this instead.
    max_length: int = DEFAULT_MAX_LENGTH
    overwrite: bool = False
    # int4 (MatMulNBits) weight-only quantization of the decoder
    int4_block_size: int = 32
    # MatMulNBits accuracy_level: 1 fp32 activations, 4 int8 activations; None = og's default
    # (4 on CPU, 0 = provider's choice on CUDA)
    int4_accuracy_level: int | None = None
    # dtype of the vision and embedding graphs' weights; None = fp32 on CPU, the decoder's
    # input/output dtype on CUDA
    vision_precision: str | None = None
    # run code shipped with the checkpoint (auto_map); never needed for transformers' own Qwen3-VL
    trust_remote_code: bool = False
    # logits for the last prompt position only (og reads them as "trimmed prefill logits")
    prune_prefill_logits: bool = True

    def __post_init__(self) -> None:
        if (self.input_dir is None) == (self.model_name is None):
            raise OptionsError("give exactly one of -m HUB_ID or -i LOCAL_DIR")
        if self.precision not in PRECISIONS:
            raise OptionsError(f"precision {self.precision!r} is unknown; choose one of {', '.join(PRECISIONS)}")
        if self.execution_provider not in EXECUTION_PROVIDERS:
            raise OptionsError(
                f"execution provider {self.execution_provider!r} is unknown; choose one of {', '.join(EXECUTION_PROVIDERS)}"
            )
        target = (self.precision, self.execution_provider)
        if target not in SUPPORTED_TARGETS:
            supported = ", ".join(f"-p {p} -e {e}" for p, e in sorted(SUPPORTED_TARGETS))
            reason = UNSUPPORTED_REASONS.get(target, "not supported yet")
            raise OptionsError(f"-p {self.precision} -e {self.execution_provider} is not supported: {reason} (supported: {supported})")
        if self.max_length < 16:
            raise OptionsError(f"--max_length {self.max_length} is too small; give at least 16")
        if self.int4_block_size not in INT4_BLOCK_SIZES:
            raise OptionsError(f"--int4_block_size {self.int4_block_size} is invalid; choose one of {INT4_BLOCK_SIZES}")
        if self.int4_accuracy_level is not None and self.int4_accuracy_level not in INT4_ACCURACY_LEVELS:
            raise OptionsError(f"--int4_accuracy_level {self.int4_accuracy_level} is invalid; choose one of {INT4_ACCURACY_LEVELS}")
        if self.precision != "int4" and (self.int4_accuracy_level is not None or self.int4_block_size != 32):
            raise OptionsError("--int4_block_size and --int4_accuracy_level apply only to -p int4")
        if self.vision_precision is not None:
            if self.vision_precision not in FLOAT_DTYPES:
                raise OptionsError(f"--vision_precision {self.vision_precision} is invalid; choose one of {FLOAT_DTYPES}")
            if self.execution_provider == "cpu" and self.vision_precision != "fp32":
                raise OptionsError(f"--vision_precision {self.vision_precision} needs -e cuda; on CPU vision runs in fp32")

    @property
    def io_dtype(self) -> str:
        """The decoder's input/output dtype, as og's builder chooses it (and so the dtype of
        ``inputs_embeds`` and ``image_features`` between the graphs)."""
        if self.precision == "fp32" or (self.precision == "int4" and self.execution_provider == "cpu"):
            return "fp32"
        return "bf16" if self.precision == "bf16" else "fp16"

    @property
    def vision_dtype(self) -> str:
        """The dtype the vision and embedding graphs compute in: fp32 on CPU; on CUDA the
        decoder's fp16, except for bf16 decoders, whose vision runs in fp32 (onnxruntime's CUDA
        provider lacks bf16 kernels for Where, Sin/Cos, Floor, Clip, Conv, so a bf16 vision graph
        would bounce to the CPU) and hands bf16 features over."""
        if self.vision_precision is not None:
            return self.vision_precision
        if self.execution_provider == "cpu" or self.io_dtype == "bf16":
            return "fp32"
        return self.io_dtype

    @property
    def accuracy_level(self) -> int:
        if self.int4_accuracy_level is not None:
            return self.int4_accuracy_level
        return 4 if self.execution_provider == "cpu" else 0
