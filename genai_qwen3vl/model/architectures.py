"""The architectures this tool exports: one entry each, everything that differs between them.

An entry names the transformers classes the export instantiates and patches, where its weights
live in a checkpoint, which onnxruntime-genai builder class writes its decoder, which og model
type the folder declares, which tokens mark images and videos, and how og's decoder weights map
back to transformers' parameters (for checking int4 graphs against dequantized weights).

Adding an architecture (e.g. Qwen3-VL-MoE) means one new ``Architecture`` in ``ARCHITECTURES``
plus what is really new for it (its expert layers), and its parity tests; see the README.

Pure data: importing this module imports neither torch nor transformers.
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType

from ..errors import CheckpointError


@dataclasses.dataclass(frozen=True)
class Architecture:
    """Everything the pipeline needs to know about one Hugging Face architecture."""

    hf_class: str  # config.json "architectures"[0]; also the transformers model class
    og_model_type: str  # genai_config.json "model.type": og's multimodal pipeline for it
    transformers_module: str  # where transformers defines the classes below
    config_class: str
    vision_class: str
    # classes whose forward the vision export replaces for the scope of the export
    vision_attention_class: str
    vision_patch_embed_class: str
    # onnxruntime-genai builder class (in og's ``builders`` package) our decoder class extends
    og_builder_module: str
    og_builder_class: str
    # checkpoint tensor name prefixes, first match wins (hub layout, then older layouts)
    vision_weight_prefixes: tuple[str, ...]
    embedding_weight_prefixes: tuple[str, ...]
    # og decoder initializer name -> transformers parameter name, for each {p} in the parts
    og_to_hf_weights: tuple[tuple[str, str, tuple[str, ...]], ...]
    og_lm_head_weight: str
    # token text of the multimodal markers (read from the tokenizer when config.json lacks ids)
    image_token: str = "<|image_pad|>"
    video_token: str = "<|video_pad|>"
    vision_start_token: str = "<|vision_start|>"
    vision_end_token: str = "<|vision_end|>"
    # onnxruntime-extensions image pipeline template in processor_configs/
    processor_template: str = "qwen3_vl_image_processor.json"

    def transformers(self) -> ModuleType:
        """transformers' modeling module for this architecture (imports torch and transformers)."""
        return importlib.import_module(self.transformers_module)

    def transformers_class(self, name: str) -> type:
        return getattr(self.transformers(), name)


QWEN3_VL = Architecture(
    hf_class="Qwen3VLForConditionalGeneration",
    og_model_type="qwen3_vl",
    transformers_module="transformers.models.qwen3_vl.modeling_qwen3_vl",
    config_class="Qwen3VLConfig",
    vision_class="Qwen3VLVisionModel",
    vision_attention_class="Qwen3VLVisionAttention",
    vision_patch_embed_class="Qwen3VLVisionPatchEmbed",
    og_builder_module="builders.qwen",
    og_builder_class="Qwen3VLTextModel",
    vision_weight_prefixes=("model.visual.", "visual."),
    embedding_weight_prefixes=("model.language_model.embed_tokens.", "model.embed_tokens."),
    og_to_hf_weights=(
        (
            "model.layers.{i}.attn.{p}_proj.MatMul.weight",
            "model.language_model.layers.{i}.self_attn.{p}_proj.weight",
            ("q", "k", "v", "o"),
        ),
        (
            "model.layers.{i}.mlp.{p}_proj.MatMul.weight",
            "model.language_model.layers.{i}.mlp.{p}_proj.weight",
            ("gate", "up", "down"),
        ),
    ),
    og_lm_head_weight="lm_head.MatMul.weight",
)

ARCHITECTURES: dict[str, Architecture] = {a.hf_class: a for a in (QWEN3_VL,)}


def architecture(name: str, where: str = "config.json") -> Architecture:
    """The registry entry for ``name``; a CheckpointError naming the supported ones otherwise."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise CheckpointError(
            f"{where} declares architecture {name}, which this tool does not export; "
            f"supported: {', '.join(ARCHITECTURES)}"
        ) from None


def architecture_of_og_type(og_model_type: str, where: str = "genai_config.json") -> Architecture:
    """The registry entry whose folders declare ``og_model_type`` (what the runtime reads)."""
    for arch in ARCHITECTURES.values():
        if arch.og_model_type == og_model_type:
            return arch
    known = ", ".join(sorted({a.og_model_type for a in ARCHITECTURES.values()}))
    raise ValueError(f"{where} declares model type {og_model_type!r}, which is not a Qwen3-VL export (expected {known})")
