"""Each graph's inputs and outputs, declared once.

The exporters name their graph I/O from here, ``configs.genai_config`` points og at these
names and files, and ``validate.check_graph_io`` checks every exported graph against it.
Dimensions are ints (fixed), strings (symbolic) or callables of the spec (fixed per model).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Union

import numpy as np

from .spec import Qwen3VLSpec

Dim = Union[int, str, Callable[[Qwen3VLSpec], int]]


@dataclasses.dataclass(frozen=True)
class TensorDecl:
    name: str
    dtype: type  # numpy scalar type (float32 means "the graph's float type" for non-fp32 graphs)
    shape: tuple[Dim, ...]

    def concrete_shape(self, spec: Qwen3VLSpec) -> tuple[int | str, ...]:
        return tuple(d(spec) if callable(d) else d for d in self.shape)


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
    outputs=(TensorDecl("image_features", np.float32, ("num_image_tokens", _feature_width)),),
)

EMBEDDING = GraphContract(
    filename="embedding.onnx",
    inputs=(
        TensorDecl("input_ids", np.int64, ("batch_size", "sequence_length")),
        TensorDecl("image_features", np.float32, ("num_image_tokens", _feature_width)),
    ),
    outputs=(TensorDecl("inputs_embeds", np.float32, ("batch_size", "sequence_length", _feature_width)),),
)

# The decoder's names are og's builder's; we only widen inputs_embeds for DeepStack.
DECODER = GraphContract(
    filename="model.onnx",
    inputs=(
        TensorDecl("inputs_embeds", np.float32, ("batch_size", "sequence_length", _feature_width)),
        TensorDecl("attention_mask", np.int64, ("batch_size", "total_sequence_length")),
        TensorDecl("position_ids", np.int64, (3, "batch_size", "sequence_length")),
    ),
    outputs=(TensorDecl("logits", np.float32, ("batch_size", "sequence_length", lambda s: s.text.vocab_size)),),
)
PAST_KEY = "past_key_values.%d.key"
PAST_VALUE = "past_key_values.%d.value"
PRESENT_KEY = "present.%d.key"
PRESENT_VALUE = "present.%d.value"

GRAPHS = {"vision": VISION, "embedding": EMBEDDING, "decoder": DECODER}
