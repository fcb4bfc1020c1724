"""Each graph's inputs and outputs, declared once.

The exporters name their graph I/O from here, ``configs.genai_config`` points og at these
names and files, and ``export.graph_check`` checks every exported graph against it.
Dimensions are ints (fixed), strings (symbolic) or callables of the spec (fixed per model).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Union

import numpy as np

from .precisions import DTYPE_NAMES
from .spec import Qwen3VLSpec

Dim = Union[int, str, Callable[[Qwen3VLSpec], int]]

# The float type that flows between the graphs: the decoder's input/output dtype (og's choice
# for the precision and provider), resolved per export.
IO_FLOAT = "io_float"
# og's builder writes float32 logits for bf16 decoders (fp16 ones keep fp16)
LOGITS_FLOAT = "logits_float"
FLOAT_NUMPY = DTYPE_NAMES
# the logits' position dim: every prompt position, or (trimmed prefill logits) the last only
LOGITS_POSITIONS = "sequence_length|1"


@dataclasses.dataclass(frozen=True)
class TensorDecl:
    name: str
    dtype: type | str  # a numpy scalar type, or IO_FLOAT
    shape: tuple[Dim, ...]

    def concrete_shape(self, spec: Qwen3VLSpec) -> tuple[int | str, ...]:
        return tuple(d(spec) if callable(d) else d for d in self.shape)

    def concrete_dtype(self, io_dtype: str) -> str:
        """numpy-style dtype name for this tensor when the graphs exchange ``io_dtype``."""
        if self.dtype == IO_FLOAT:
            return FLOAT_NUMPY[io_dtype]
        if self.dtype == LOGITS_FLOAT:
            return "float32" if io_dtype == "bf16" else FLOAT_NUMPY[io_dtype]
        return np.dtype(self.dtype).name


@dataclasses.dataclass(frozen=True)
class GraphContract:
    filename: str
    inputs: tuple[TensorDecl, ...]
    outputs: tuple[TensorDecl, ...]

    def input(self, key: str) -> TensorDecl:
        return next(t for t in self.inputs if t.name == key)

    def output(self, key: str) -> TensorDecl:
        return next(t for t in self.outputs if t.name == key)


def _feature_width(spec: Qwen3VLSpec) -> int:
    return spec.feature_width


def _patch_dim(spec: Qwen3VLSpec) -> int:
    return spec.vision.patch_dim


VISION = GraphContract(
    filename="vision.onnx",
    inputs=(
        TensorDecl("pixel_values", np.float32, ("num_patches", _patch_dim)),
        TensorDecl("image_grid_thw", np.int64, ("num_images", 3)),
    ),
    outputs=(TensorDecl("image_features", IO_FLOAT, ("num_image_tokens", _feature_width)),),
)

EMBEDDING = GraphContract(
    filename="embedding.onnx",
    inputs=(
        TensorDecl("input_ids", np.int64, ("batch_size", "sequence_length")),
        TensorDecl("image_features", IO_FLOAT, ("num_image_tokens", _feature_width)),
    ),
    outputs=(TensorDecl("inputs_embeds", IO_FLOAT, ("batch_size", "sequence_length", _feature_width)),),
)

# The decoder's names are og's builder's; we only widen inputs_embeds for DeepStack.
DECODER = GraphContract(
    filename="model.onnx",
    inputs=(
        TensorDecl("inputs_embeds", IO_FLOAT, ("batch_size", "sequence_length", _feature_width)),
        TensorDecl("attention_mask", np.int64, ("batch_size", "total_sequence_length")),
        TensorDecl("position_ids", np.int64, (3, "batch_size", "sequence_length")),
    ),
    # "sequence_length", or 1 when the export keeps the last position's logits only
    outputs=(TensorDecl("logits", LOGITS_FLOAT, ("batch_size", LOGITS_POSITIONS, lambda s: s.text.vocab_size)),),
)
PAST_KEY = "past_key_values.%d.key"
PAST_VALUE = "past_key_values.%d.value"
PRESENT_KEY = "present.%d.key"
PRESENT_VALUE = "present.%d.value"
# Qwen3.5's linear-attention layers: their state in and out (og's builder's names, which og's
# runtime finds through genai_config.json's past/present_conv_names and _recurrent_names)
PAST_CONV = "past.%d.conv"
PAST_RECURRENT = "past.%d.recurrent"
PRESENT_CONV = "present.%d.conv"
PRESENT_RECURRENT = "present.%d.recurrent"


def kv_cache_names(spec: Qwen3VLSpec) -> list[str]:
    """The decoder's KV cache inputs and outputs: one key and value per full-attention layer."""
    return [p % i for i in spec.text.full_attention_layers for p in (PAST_KEY, PAST_VALUE, PRESENT_KEY, PRESENT_VALUE)]


def linear_state(spec: Qwen3VLSpec) -> tuple[TensorDecl, ...]:
    """The linear-attention layers' state, inputs and outputs of one shape each: the convolution's
    last kernel-1 inputs [B, conv_dim, kernel-1] and the recurrent state [B, Hv, dk, dv]."""
    lin = spec.text.linear
    if lin is None:
        return ()
    conv = ("batch_size", lin.conv_dim, lin.conv_kernel - 1)
    recurrent = ("batch_size", lin.num_value_heads, lin.key_head_dim, lin.value_head_dim)
    return tuple(
        TensorDecl(pattern % i, IO_FLOAT, shape)
        for i in spec.text.linear_attention_layers
        for pattern, shape in ((PAST_CONV, conv), (PAST_RECURRENT, recurrent), (PRESENT_CONV, conv), (PRESENT_RECURRENT, recurrent))
    )


GRAPHS = {"vision": VISION, "embedding": EMBEDDING, "decoder": DECODER}
