"""The tiny presets: the dimensions, pixel limits and layout of every tiny checkpoint.

The presets use awkward dimensions on purpose: ``heads * head_dim != hidden``, GQA, uneven
``mrope_section``, adjacent and non-adjacent DeepStack indexes, tied and untied embeddings.
``MOE_PRESETS`` are Qwen3-VL-MoE checkpoints (``Qwen3VLMoeForConditionalGeneration``): experts and
top-k of several sizes, dense layers among the expert layers, expert tensors in transformers'
layout or transposed as the hub files hold them. ``QWEN3_5_PRESETS`` are Qwen3.5 checkpoints
(``Qwen3_5ForConditionalGeneration``): linear-attention layers in and out of the default order,
partial rotary, no DeepStack.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from .templates import CHAT_TEMPLATES


@dataclasses.dataclass(frozen=True)
class TinyPreset:
    """One tiny checkpoint: its text and vision config values (transformers' names, passed to
    ``Qwen3VLConfig`` as they are; ``mrope_section`` goes into ``rope_parameters``) and its image
    processor's pixel limits (size.shortest_edge, size.longest_edge)."""

    name: str
    text: Mapping[str, Any]
    vision: Mapping[str, Any]
    pixels: tuple[int, int]
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    extra_vocab: int = 0  # model vocab rows beyond the tokenizer's (Qwen pads its vocab too)
    # multipliers of the random MLP down_proj and attention o_proj weights (see checkpoint._randomize_)
    gains: tuple[float, float] = (1.0, 1.0)
    rope_theta: float = 5_000_000.0
    # Write it as Qwen's published checkpoints are: bf16 weights in several shards and a
    # config.json in the transformers-4.57 layout (rope_scaling + rope_theta).
    hub_layout: bool = False
    chat_template: str = "instruct"  # a key of CHAT_TEMPLATES
    # more plain added tokens for this checkpoint's tokenizer, after ADDED_TOKENS (ids follow theirs)
    added_tokens: tuple[str, ...] = ()
    # Qwen3-VL-MoE: the text config's expert values (num_experts, num_experts_per_tok,
    # moe_intermediate_size, decoder_sparse_step, mlp_only_layers); None for dense Qwen3-VL
    moe: Mapping[str, Any] | None = None
    # multiplier of the random router weights: larger gives sharper (more decided) routing
    router_gain: float = 1.0
    # multiplier of the vision merger's output projection: the scale of an image's rows in
    # inputs_embeds beside the token rows
    vision_gain: float = 1.0
    # Qwen3.5 (Qwen3_5ForConditionalGeneration): the text config's linear-attention values
    # (layer_types, linear_*, and partial_rotary_factor, which goes into rope_parameters); keys
    # left out take transformers' defaults. None for Qwen3-VL
    linear: Mapping[str, Any] | None = None

    @property
    def hf_class(self) -> str:
        if self.linear is not None:
            return "Qwen3_5MoeForConditionalGeneration" if self.moe else "Qwen3_5ForConditionalGeneration"
        return "Qwen3VLMoeForConditionalGeneration" if self.moe else "Qwen3VLForConditionalGeneration"

    def __post_init__(self):
        if self.chat_template not in CHAT_TEMPLATES:
            raise ValueError(f"chat_template must be one of {sorted(CHAT_TEMPLATES)}, got {self.chat_template!r}")

    @property
    def tie_word_embeddings(self) -> bool:
        return bool(self.text["tie_word_embeddings"])


def _text(hidden, heads, kv_heads, head_dim, mlp, layers, mrope, tied) -> dict[str, Any]:
    values = dict(
        hidden_size=hidden,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        intermediate_size=mlp,
        num_hidden_layers=layers,
        mrope_section=mrope,
        tie_word_embeddings=tied,
    )
    if mlp is None:  # Qwen3.5-MoE: no dense MLP anywhere, and no intermediate_size in its config
        del values["intermediate_size"]
    return values


def _moe(experts, top_k, width, sparse_step=1, mlp_only=()) -> dict[str, Any]:
    return dict(
        num_experts=experts,
        num_experts_per_tok=top_k,
        moe_intermediate_size=width,
        decoder_sparse_step=sparse_step,
        mlp_only_layers=list(mlp_only),
    )


def _moe35(experts, top_k, width, shared) -> dict[str, Any]:
    """Qwen3.5-MoE's expert values: experts on every layer, and a shared expert of its own width."""
    return dict(num_experts=experts, num_experts_per_tok=top_k, moe_intermediate_size=width, shared_expert_intermediate_size=shared)


def _vision(hidden, heads, mlp, depth, deepstack, positions) -> dict[str, Any]:
    return dict(
        hidden_size=hidden,
        num_heads=heads,
        intermediate_size=mlp,
        depth=depth,
        deepstack_visual_indexes=deepstack,
        num_position_embeddings=positions,
    )


_CLIP = dict(image_mean=(0.48145466, 0.4578275, 0.40821073), image_std=(0.26862954, 0.26130258, 0.27577711))
_PATCHES = 16 * 16 * 4  # pixels per merged patch (one image token)

PRESETS: dict[str, TinyPreset] = {
    p.name: p
    for p in (
        # non-adjacent deepstack (K=2), GQA 6/2, heads*head_dim (96) != hidden (40), untied
        TinyPreset(
            "awkward",
            _text(40, 6, 2, 16, 72, 4, (3, 3, 2), False),
            _vision(48, 3, 80, 4, (0, 2), 64),
            (_PATCHES * 6, _PATCHES * 40),
            extra_vocab=37,
            **_CLIP,
        ),
        # adjacent deepstack (K=3, as in every released size), tied embeddings (2B/4B), MHA, hub layout
        TinyPreset(
            "tied",
            _text(64, 4, 4, 24, 96, 5, (4, 4, 4), True),
            _vision(32, 2, 64, 5, (1, 2, 3), 36),
            (_PATCHES * 4, _PATCHES * 30),
            hub_layout=True,
            gains=(6.0, 0.5),
        ),
        # deeper and wider: 8 layers, GQA 8/2, DeepStack K=3 spread over a 6-block vision tower,
        # a 24x24 position table, Qwen's real min_pixels (every image >= 64 tokens)
        TinyPreset(
            "deep",
            _text(256, 8, 2, 48, 704, 8, (8, 8, 8), False),
            _vision(128, 4, 320, 6, (1, 3, 5), 576),
            (65536, _PATCHES * 256),
            extra_vocab=100,
            gains=(6.0, 0.5),
        ),
        # real Qwen3-VL pixel limits and the released mrope_section proportions
        TinyPreset(
            "real_limits",
            _text(48, 4, 2, 32, 64, 3, (6, 5, 5), True),
            _vision(32, 2, 48, 3, (0, 1, 2), 2304),
            (65536, 16777216),
            gains=(4.0, 0.5),
        ),
    )
}

# Qwen3-VL-MoE. Expert widths avoid H == 2I and H == I (where transformers' layout and the hub's
# transposed one have the same shape and cannot be told apart, as in transformers itself).
MOE_PRESETS: dict[str, TinyPreset] = {
    p.name: p
    for p in (
        # 8 experts top-2 of 40 (K % 32 != 0 in both expert MatMuls), layer 2 of 4 dense
        # (mlp_only_layers), GQA 6/2, heads*head_dim != hidden, non-adjacent DeepStack (0, 2), untied
        TinyPreset(
            "moe",
            _text(48, 6, 2, 16, 72, 4, (3, 3, 2), False),
            _vision(48, 3, 80, 4, (0, 2), 64),
            (_PATCHES * 6, _PATCHES * 40),
            extra_vocab=21,
            moe=_moe(8, 2, 40, mlp_only=(2,)),
            **_CLIP,
        ),
        # 6 experts top-3 of 64 on every second layer (decoder_sparse_step 2), layer 5 dense all the
        # same (mlp_only_layers): experts on layers 1 and 3, so DeepStack (K=3) feeds dense and expert
        # layers; tied embeddings; written as Qwen's hub checkpoints are, expert tensors transposed;
        # hidden 128 (heads*head_dim 96) and expert width 64: onnxruntime's CUDA 4-bit QMoE needs
        # multiples of 64 for both; router gain 1.5 keeps every int4 end-to-end case clear of a
        # near-tied expert choice at these widths (2.0 and 3.0 each flip one)
        TinyPreset(
            "moe_hub",
            _text(128, 4, 2, 24, 80, 6, (4, 4, 4), True),
            _vision(32, 2, 64, 5, (1, 3, 4), 36),
            (_PATCHES * 4, _PATCHES * 30),
            hub_layout=True,
            gains=(4.0, 0.5),
            moe=_moe(6, 3, 64, sparse_step=2, mlp_only=(5,)),
            router_gain=1.5,
        ),
    )
}


def _linear(kernel, key_dim, value_dim, key_heads, value_heads, layer_types=None, partial_rotary=None) -> dict[str, Any]:
    values = dict(
        linear_conv_kernel_dim=kernel,
        linear_key_head_dim=key_dim,
        linear_value_head_dim=value_dim,
        linear_num_key_heads=key_heads,
        linear_num_value_heads=value_heads,
    )
    if layer_types is not None:
        values["layer_types"] = ["full_attention" if kind == "F" else "linear_attention" for kind in layer_types]
    if partial_rotary is not None:
        values["partial_rotary_factor"] = partial_rotary
    return values


# Qwen3.5 (Qwen3_5ForConditionalGeneration): no DeepStack, linear-attention layers among the
# full-attention ones, a quarter of each head rotated.
QWEN3_5_PRESETS: dict[str, TinyPreset] = {
    p.name: p
    for p in (
        # full attention first and in an order the default rule never gives (F L L F L), GQA 6/2,
        # heads*head_dim (192) != hidden (40), linear heads 2 keys / 4 values of widths 8 and 12
        # (conv over 80 channels), kernel 3, a quarter of 32 rotated (mrope 2+1+1), untied; the
        # gains keep the model's sensitivity to its inputs moderate (with plain weights, the 2.5e-6
        # by which onnxruntime's vision features differ from transformers' moved the prefill
        # logits by 2.5e-4; with these, 2e-5)
        TinyPreset(
            "q35",
            _text(40, 6, 2, 32, 72, 5, (2, 1, 1), False),
            _vision(48, 3, 80, 3, (), 64),
            (_PATCHES * 6, _PATCHES * 40),
            extra_vocab=29,
            gains=(4.0, 0.5),
            linear=_linear(3, 8, 12, 2, 4, layer_types="FLLFL", partial_rotary=0.25),
            chat_template="qwen3_5",
            **_CLIP,
        ),
        # transformers' defaults where released configs may leave values out: no layer_types
        # (every 4th layer full: L L L F L), no mrope_section (transformers' [11, 11, 10], so
        # head_dim 256 at a quarter rotated), kernel 4; MHA-like 2/1 heads; linear heads 1 key /
        # 3 values; tied; written as the hub writes (bf16 shards). 48 wide: at 64 (logits up to 16)
        # fp32 summation-order noise alone reached 1.1e-4 on some greedy steps; image rows at a
        # third of their random scale, near the tied table's token rows (at full scale the 2.5e-6
        # by which onnxruntime's vision features differ from transformers' moved logits by 4e-4)
        TinyPreset(
            "q35_tied",
            _text(48, 2, 1, 256, 96, 5, None, True),
            _vision(32, 2, 64, 2, (), 36),
            (_PATCHES * 4, _PATCHES * 30),
            hub_layout=True,
            gains=(4.0, 0.5),
            vision_gain=0.3,
            linear=_linear(4, 16, 8, 1, 3),
            chat_template="qwen3_5",
        ),
        # Qwen3.5-MoE (Qwen3_5MoeForConditionalGeneration): an expert layer on every text layer,
        # 6 experts top-2 of width 40 (K % 32 != 0 in the down MatMul) beside a shared expert of
        # width 56 under its sigmoid gate; full and linear layers F L L F F, half of each head
        # rotated, heads*head_dim (96) != hidden (64); untied; written as the hub holds Qwen3.5-MoE:
        # bf16 shards, the experts stacked in transformers' own layout (transformers 5 writes them
        # one tensor per expert when it saves: test_qwen35.py exports that layout too). Full
        # attention first: with a linear layer first (L F L L F), transformers' fp32 chunked delta
        # rule on the raw embedding rows was 3e-5 from float64 at the prompt's last token
        # (onnxruntime's 1.2e-5), and the expert layers carried that to 1.6e-4..3.8e-4 on the
        # logits of the image cases; as below, every end-to-end case stays under 4e-5
        TinyPreset(
            "q35_moe",
            _text(64, 4, 2, 24, None, 5, (2, 2, 2), False),
            _vision(32, 2, 64, 2, (), 36),
            (_PATCHES * 4, _PATCHES * 30),
            extra_vocab=13,
            hub_layout=True,
            gains=(4.0, 0.5),
            moe=_moe35(6, 2, 40, 56),
            router_gain=1.5,
            vision_gain=0.3,
            linear=_linear(3, 8, 12, 2, 4, layer_types="FLLFF", partial_rotary=0.5),
            chat_template="qwen3_5",
        ),
    )
}
ALL_TINY_PRESETS: dict[str, TinyPreset] = {**PRESETS, **MOE_PRESETS, **QWEN3_5_PRESETS}
