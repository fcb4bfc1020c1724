"""Typed, frozen export options (what the command line asked for)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import OptionsError
from ..model.precisions import (
    DEFAULT_INT4_BLOCK_SIZE,
    DEFAULT_INT4_RECIPE,
    FLOAT_DTYPES,
    INT4_ACCURACY_LEVELS,
    INT4_BLOCK_SIZES,
    INT4_RECIPES,
    VISION_QUANT,
    QuantLayout,
    Target,
    target,
)

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
    int4_block_size: int = DEFAULT_INT4_BLOCK_SIZE
    # MatMulNBits accuracy_level: 1 fp32 activations, 4 int8 activations; None = the target's default
    int4_accuracy_level: int | None = None
    # which weights get 8 bits (precisions.INT4_RECIPES)
    int4_recipe: str = DEFAULT_INT4_RECIPE
    # dtype of the vision and embedding graphs' weights; None = the target's default
    vision_precision: str | None = None
    # -e cpu: the vision tower's Linear weights block-quantized (precisions.VISION_QUANT); None = float
    vision_quant: str | None = None
    # run code shipped with the checkpoint (auto_map); never needed for transformers' own Qwen3-VL
    trust_remote_code: bool = False
    # logits for the last prompt position only (og reads them as "trimmed prefill logits");
    # --full_prefill_logits turns it off
    trim_prefill_logits: bool = True

    def __post_init__(self) -> None:
        if (self.input_dir is None) == (self.model_name is None):
            raise OptionsError("give exactly one of -m HUB_ID or -i LOCAL_DIR")
        try:
            record = target(self.precision, self.execution_provider)
        except ValueError as exc:
            raise OptionsError(str(exc)) from None
        if self.max_length < 16:
            raise OptionsError(f"--max_length {self.max_length} is too small; give at least 16")
        if self.int4_block_size not in INT4_BLOCK_SIZES:
            raise OptionsError(f"--int4_block_size {self.int4_block_size} is invalid; choose one of {INT4_BLOCK_SIZES}")
        if self.int4_accuracy_level is not None and self.int4_accuracy_level not in INT4_ACCURACY_LEVELS:
            raise OptionsError(f"--int4_accuracy_level {self.int4_accuracy_level} is invalid; choose one of {INT4_ACCURACY_LEVELS}")
        if self.int4_recipe not in INT4_RECIPES:
            raise OptionsError(f"--int4_recipe {self.int4_recipe} is invalid; choose one of {', '.join(INT4_RECIPES)}")
        int4_flags = self.int4_accuracy_level is not None or self.int4_block_size != DEFAULT_INT4_BLOCK_SIZE
        if not record.quantized and (int4_flags or self.int4_recipe != DEFAULT_INT4_RECIPE):
            raise OptionsError("--int4_block_size, --int4_accuracy_level and --int4_recipe apply only to -p int4")
        if self.int4_recipe != DEFAULT_INT4_RECIPE and not record.streaming_int4:
            raise OptionsError(
                f"--int4_recipe {self.int4_recipe} applies to -p int4 -e cpu; on {self.execution_provider} og's builder quantizes"
            )
        if self.vision_precision is not None:
            if self.vision_precision not in FLOAT_DTYPES:
                raise OptionsError(f"--vision_precision {self.vision_precision} is invalid; choose one of {FLOAT_DTYPES}")
            if self.execution_provider == "cpu" and self.vision_precision != "fp32":
                raise OptionsError(f"--vision_precision {self.vision_precision} needs -e cuda; on CPU vision runs in fp32")

        if self.vision_quant is not None:
            if self.vision_quant not in VISION_QUANT:
                raise OptionsError(f"--vision_quant {self.vision_quant} is invalid; choose one of {', '.join(VISION_QUANT)}")
            if self.execution_provider != "cpu":
                raise OptionsError(
                    f"--vision_quant applies to -e cpu; on {self.execution_provider} the vision tower runs in "
                    f"{self.vision_dtype} (--vision_precision)"
                )

    @property
    def target(self) -> Target:
        """The precision record of ``-p`` / ``-e``."""
        return target(self.precision, self.execution_provider)

    @property
    def io_dtype(self) -> str:
        """The float type between the graphs (og's builder's decoder input/output dtype)."""
        return self.target.io_dtype

    @property
    def vision_dtype(self) -> str:
        """The dtype the vision and embedding graphs compute in."""
        return self.vision_precision or self.target.vision_dtype

    @property
    def quant_layout(self) -> QuantLayout | None:
        """-p int4 -e cpu: how our quantizer writes the text weights; None otherwise."""
        if not self.target.streaming_int4:
            return None
        return dataclasses.replace(
            INT4_RECIPES[self.int4_recipe], block_size=self.int4_block_size, accuracy_level=self.resolved_accuracy_level
        )

    @property
    def vision_layout(self) -> QuantLayout | None:
        """--vision_quant: how the vision tower's Linear weights are quantized; None = float."""
        return VISION_QUANT[self.vision_quant] if self.vision_quant else None

    @property
    def resolved_accuracy_level(self) -> int | None:
        """MatMulNBits accuracy_level for -p int4 (--int4_accuracy_level, else the target's default);
        None for the float precisions."""
        if not self.target.quantized:
            return None
        return self.int4_accuracy_level if self.int4_accuracy_level is not None else self.target.default_accuracy_level
