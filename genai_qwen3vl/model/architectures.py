"""The architectures this tool exports: one entry each, everything that differs between them.

An entry names the transformers classes the export instantiates and patches, where its weights
live in a checkpoint, which onnxruntime-genai builder class writes its decoder, which og model
type the folder declares, which tokens mark images and videos, and how og's decoder weights map
back to transformers' parameters (for checking int4 graphs against dequantized weights).

Adding an architecture means one new ``Architecture`` in ``ARCHITECTURES`` plus what is really
new for it, and its parity tests; see docs/design.md (adding an architecture). Qwen3-VL-MoE is the example: its entry differs
in its classes and its ``experts`` (where the expert tensors lie); what is new, the expert
layers of the decoder, is ``export/moe.py``, a mixin of og's builder class.

Pure data: importing this module imports neither torch nor transformers.
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType

from ..errors import CheckpointError


@dataclasses.dataclass(frozen=True)
class ExpertLayers:
    """Where a mixture-of-experts checkpoint keeps its expert layers (``{i}``: the text layer).

    ``gate_up`` is the experts' stacked [gate | up] projection and ``down`` their output
    projection: transformers holds them as [E, 2I, H] and [E, H, I]; the hub files hold them
    transposed, [E, H, 2I] and [E, I, H], and transformers transposes on load where the shape
    says so. ``router`` is the [E, H] router weight."""

    gate_up: str = "model.language_model.layers.{i}.mlp.experts.gate_up_proj"
    down: str = "model.language_model.layers.{i}.mlp.experts.down_proj"
    router: str = "model.language_model.layers.{i}.mlp.gate.weight"
    # transformers' parameter names of the same tensors (in its [E, 2I, H] / [E, H, I] layout)
    hf_gate_up: str = "model.language_model.layers.{i}.mlp.experts.gate_up_proj"
    hf_down: str = "model.language_model.layers.{i}.mlp.experts.down_proj"
    # the hub files may hold the stacked tensors transposed ([E, H, 2I] / [E, I, H]; Qwen3-VL-MoE's
    # do, and transformers transposes them on load where the shape says so)
    hub_transposed: bool = True
    # decoder_sparse_step and mlp_only_layers choose the expert layers (Qwen3-VL-MoE); False: every
    # text layer is one (Qwen3.5-MoE, whose transformers class reads neither)
    sparse_layers: bool = True
    # the other layout a checkpoint may hold its experts in: one [I, H] / [H, I] tensor per expert
    # and projection ({j}: the expert, {p}: gate, up or down), as transformers 5 writes a model it
    # saves; None: only the stacked tensors
    per_expert: str | None = None
    # the always-active shared expert beside the routed ones: an MLP ({p}: gate, up, down) and its
    # [1, H] sigmoid gate; None: none
    shared_expert: str | None = None
    shared_expert_gate: str | None = None

    def is_expert_weight(self, name: str) -> bool:
        """Whether a checkpoint tensor is an expert tensor (read one layer at a time, never all)."""
        return ".mlp.experts." in name


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
    # onnxruntime-genai builder class (in og's ``builders`` package) our decoder class extends;
    # None: og's builder writes the decoder with the class it picks itself
    og_builder_module: str | None
    og_builder_class: str | None
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
    # mixture-of-experts text layers (their decoder layers come from export/moe.py); None: dense
    experts: ExpertLayers | None = None
    # the architecture og's create_model is told, where og's builder knows this one by another
    # name (it dispatches on config.architectures[0]); None: hf_class
    og_dispatch_as: str | None = None
    # Qwen3.5: text layers of linear attention (gated delta rule) among the full-attention ones;
    # og's builder writes the decoder with its own classes (og_builder_class None), with the
    # linear layers' convolution and recurrent state as decoder inputs and outputs
    linear_attention: bool = False
    # og builder extra_options this architecture always needs
    og_extra_options: tuple[tuple[str, str], ...] = ()
    # og decoder initializer -> transformers parameters it stacks along its output axis, in order
    # ({i}: the text layer), for checking int4 graphs against dequantized weights
    og_fused_weights: tuple[tuple[str, tuple[str, ...]], ...] = ()

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

# Qwen3-VL-MoE (30B-A3B, 235B-A22B): Qwen3-VL's vision tower, attention and DeepStack, with
# expert layers (softmax over all experts, top-k, renormalised) on the layers its config names.
# og's runtime knows no qwen3_vl_moe type and needs none: the folder runs as a qwen3_vl one. og's
# builder knows no Qwen3VLMoe either: it is told Qwen3VLForConditionalGeneration and builds with
# our MoE builder class (export/og_builder.py).
QWEN3_VL_MOE = dataclasses.replace(
    QWEN3_VL,
    hf_class="Qwen3VLMoeForConditionalGeneration",
    transformers_module="transformers.models.qwen3_vl_moe.modeling_qwen3_vl_moe",
    config_class="Qwen3VLMoeConfig",
    vision_class="Qwen3VLMoeVisionModel",
    vision_attention_class="Qwen3VLMoeVisionAttention",
    vision_patch_embed_class="Qwen3VLMoeVisionPatchEmbed",
    experts=ExpertLayers(),
    og_dispatch_as="Qwen3VLForConditionalGeneration",
)

# Qwen3.5 (and Qwen3.6, the same classes): Qwen3-VL's vision tower without DeepStack, and a text
# model of linear-attention (gated delta rule) layers among full-attention ones (gated attention,
# partial rotary, q/k norm, zero-centred RMSNorm). og 0.18's builder writes its decoder itself
# (Qwen35Model: linear layers as onnxruntime's CausalConvWithState, LinearAttention and
# GatedRMSNorm; the multi-token-prediction head left out) and og's runtime runs the folder as a
# vision-language qwen3_5 model: the same processor, vision, embedding and position contract as
# qwen3_vl, plus the linear layers' state.
QWEN3_5 = Architecture(
    hf_class="Qwen3_5ForConditionalGeneration",
    og_model_type="qwen3_5",
    transformers_module="transformers.models.qwen3_5.modeling_qwen3_5",
    config_class="Qwen3_5Config",
    vision_class="Qwen3_5VisionModel",
    vision_attention_class="Qwen3_5VisionAttention",
    vision_patch_embed_class="Qwen3_5VisionPatchEmbed",
    og_builder_module=None,
    og_builder_class=None,
    vision_weight_prefixes=("model.visual.", "visual."),
    embedding_weight_prefixes=("model.language_model.embed_tokens.", "model.embed_tokens."),
    og_to_hf_weights=(
        ("model.layers.{i}.attn.{p}_proj.MatMul.weight", "model.language_model.layers.{i}.self_attn.{p}_proj.weight", ("o",)),
        (
            "model.layers.{i}.linear_attn.{p}_proj.MatMul.weight",
            "model.language_model.layers.{i}.linear_attn.in_proj_{p}.weight",
            ("qkv", "z", "b", "a"),
        ),
        ("model.layers.{i}.linear_attn.{p}_proj.MatMul.weight", "model.language_model.layers.{i}.linear_attn.{p}_proj.weight", ("out",)),
        (
            "model.layers.{i}.mlp.{p}_proj.MatMul.weight",
            "model.language_model.layers.{i}.mlp.{p}_proj.weight",
            ("gate", "up", "down"),
        ),
    ),
    og_fused_weights=(
        (
            "model.layers.{i}.attn.qkv_proj.MatMul.weight",
            (
                "model.language_model.layers.{i}.self_attn.q_proj.weight",
                "model.language_model.layers.{i}.self_attn.k_proj.weight",
                "model.language_model.layers.{i}.self_attn.v_proj.weight",
            ),
        ),
    ),
    og_lm_head_weight="lm_head.MatMul.weight",
    linear_attention=True,
    og_extra_options=(("exclude_mtp", "true"),),
)

# Qwen3.5-MoE (35B-A3B ... 397B-A17B; Qwen3.6's MoE sizes): Qwen3.5 with an expert layer on every
# text layer (softmax over all experts, top-k, renormalised) beside a shared expert whose output a
# sigmoid gate scales. og 0.18's builder writes it itself (Qwen35MoEModel: the experts as one MoE or
# QMoE op, the shared expert as a plain MLP) and og's runtime runs the folder as qwen3_5_moe.
QWEN3_5_MOE = dataclasses.replace(
    QWEN3_5,
    hf_class="Qwen3_5MoeForConditionalGeneration",
    og_model_type="qwen3_5_moe",
    transformers_module="transformers.models.qwen3_5_moe.modeling_qwen3_5_moe",
    config_class="Qwen3_5MoeConfig",
    vision_class="Qwen3_5MoeVisionModel",
    vision_attention_class="Qwen3_5MoeVisionAttention",
    vision_patch_embed_class="Qwen3_5MoeVisionPatchEmbed",
    experts=ExpertLayers(
        hub_transposed=False,
        sparse_layers=False,
        per_expert="model.language_model.layers.{i}.mlp.experts.{j}.{p}_proj.weight",
        shared_expert="model.language_model.layers.{i}.mlp.shared_expert.{p}_proj.weight",
        shared_expert_gate="model.language_model.layers.{i}.mlp.shared_expert_gate.weight",
    ),
    # og writes the shared expert where a dense layer's MLP would be (/model/layers.{i}/mlp/...)
    og_to_hf_weights=(
        *QWEN3_5.og_to_hf_weights[:-1],
        (
            "model.layers.{i}.mlp.{p}_proj.MatMul.weight",
            "model.language_model.layers.{i}.mlp.shared_expert.{p}_proj.weight",
            ("gate", "up", "down"),
        ),
    ),
)

ARCHITECTURES: dict[str, Architecture] = {a.hf_class: a for a in (QWEN3_VL, QWEN3_VL_MOE, QWEN3_5, QWEN3_5_MOE)}


def architecture(name: str, where: str = "config.json") -> Architecture:
    """The registry entry for ``name``; a CheckpointError naming the supported ones otherwise."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise CheckpointError(
            f"{where} declares architecture {name}, which this tool does not export; supported: {', '.join(ARCHITECTURES)}"
        ) from None


def architecture_of_og_type(og_model_type: str, where: str = "an exported folder's genai_config.json") -> Architecture:
    """The registry entry whose folders declare ``og_model_type`` (what the runtime reads).

    Several entries may declare one type (Qwen3-VL and Qwen3-VL-MoE both run as og's
    ``qwen3_vl``); the first is returned. What the runtime reads from it (marker tokens, the
    processor template) must then agree between them: ``tests/model/test_spec.py`` checks it."""
    for arch in ARCHITECTURES.values():
        if arch.og_model_type == og_model_type:
            return arch
    known = ", ".join(sorted({a.og_model_type for a in ARCHITECTURES.values()}))
    raise ValueError(f"{where} declares model type {og_model_type!r}, which is not a Qwen3-VL export (expected {known})")
