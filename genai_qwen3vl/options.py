"""Typed, frozen export options (what the command line asked for)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .errors import OptionsError

PRECISIONS = ("fp32", "fp16", "bf16", "int4")
EXECUTION_PROVIDERS = ("cpu", "cuda")
# (precision, execution provider) pairs this version exports.
SUPPORTED_TARGETS = frozenset({("fp32", "cpu")})

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

    def __post_init__(self) -> None:
        if (self.input_dir is None) == (self.model_name is None):
            raise OptionsError("give exactly one of -m HUB_ID or -i LOCAL_DIR")
        if self.precision not in PRECISIONS:
            raise OptionsError(f"precision {self.precision!r} is unknown; choose one of {', '.join(PRECISIONS)}")
        if self.execution_provider not in EXECUTION_PROVIDERS:
            raise OptionsError(
                f"execution provider {self.execution_provider!r} is unknown; choose one of {', '.join(EXECUTION_PROVIDERS)}"
            )
        if (self.precision, self.execution_provider) not in SUPPORTED_TARGETS:
            supported = ", ".join(f"-p {p} -e {e}" for p, e in sorted(SUPPORTED_TARGETS))
            raise OptionsError(
                f"-p {self.precision} -e {self.execution_provider} is not supported yet; supported: {supported}"
            )
        if self.max_length < 16:
            raise OptionsError(f"--max_length {self.max_length} is too small; give at least 16")
