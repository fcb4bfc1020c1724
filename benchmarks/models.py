"""Random checkpoints with Qwen3-VL-2B's, Qwen3-VL-30B-A3B's and Qwen3.5-2B's real widths, cut to a
chosen depth, built once and cached."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from genai_qwen3vl.testing.tiny import TinyPreset, write_checkpoint

DEFAULT_CACHE = Path(os.environ.get("GENAI_QWEN3VL_BENCH_CACHE", Path.home() / ".cache" / "genai_qwen3vl_bench"))

# Qwen3-VL-2B-Instruct: text 2048 wide, 28 layers, 16 heads / 8 kv heads of 128, MLP 6144,
# vocab 151936, tied embeddings; vision 1024 wide, 24 blocks, 16 heads, DeepStack after 5/11/17.
# Its weights are random; its widths, depths and file layout (bf16 shards, hub config) are real.
QWEN3VL_2B = TinyPreset(
    "qwen3vl-2b-shape",
    text=dict(
        hidden_size=2048,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        intermediate_size=6144,
        num_hidden_layers=28,
        mrope_section=(24, 20, 20),
        tie_word_embeddings=True,
    ),
    vision=dict(
        hidden_size=1024, num_heads=16, intermediate_size=4096, depth=24, deepstack_visual_indexes=(5, 11, 17), num_position_embeddings=2304
    ),
    pixels=(65536, 16777216),
    hub_layout=True,
)


def qwen3vl_2b_shape(layers: int = 28, vision_layers: int = 24) -> TinyPreset:
    """The 2B shape with ``layers`` text layers and ``vision_layers`` vision blocks (DeepStack
    indexes scaled into the shorter tower)."""
    depth = vision_layers
    deepstack = tuple(sorted({min(depth - 1, round(i * depth / 24)) for i in (5, 11, 17)}))
    return dataclasses.replace(
        QWEN3VL_2B,
        name=f"qwen3vl-2b-shape-L{layers}-V{vision_layers}",
        text={**QWEN3VL_2B.text, "num_hidden_layers": layers},
        vision={**QWEN3VL_2B.vision, "depth": depth, "deepstack_visual_indexes": deepstack},
        extra_vocab=151936 - 438,  # the tiny tokenizer has 438 entries; the model keeps 2B's vocab
    )


# Qwen3-VL-30B-A3B-Instruct: text 2048 wide, 48 layers, 32 heads / 4 kv heads of 128, 128 experts
# of 768 (top 8) on every layer, vocab 151936, untied; vision as released: 1152 wide, 27 blocks,
# 16 heads, MLP 4304, DeepStack after 8/16/24.
QWEN3VL_30B_A3B = TinyPreset(
    "qwen3vl-30b-a3b-shape",
    text=dict(
        hidden_size=2048,
        num_attention_heads=32,
        num_key_value_heads=4,
        head_dim=128,
        intermediate_size=6144,
        num_hidden_layers=48,
        mrope_section=(24, 20, 20),
        tie_word_embeddings=False,
    ),
    vision=dict(
        hidden_size=1152, num_heads=16, intermediate_size=4304, depth=27, deepstack_visual_indexes=(8, 16, 24), num_position_embeddings=2304
    ),
    pixels=(65536, 16777216),
    hub_layout=True,
    moe=dict(num_experts=128, num_experts_per_tok=8, moe_intermediate_size=768, decoder_sparse_step=1, mlp_only_layers=[]),
    extra_vocab=151936 - 438,
)


def qwen3vl_30b_a3b_shape(layers: int = 48, vision_layers: int = 27) -> TinyPreset:
    """The 30B-A3B shape with ``layers`` text layers (every one with experts) and
    ``vision_layers`` vision blocks (DeepStack indexes scaled into the shorter tower; with fewer
    than 3 text layers, as many DeepStack feature sets as there are layers to take them)."""
    depth = vision_layers
    deepstack = tuple(sorted({min(depth - 1, round(i * depth / 27)) for i in (8, 16, 24)}))[:layers]
    return dataclasses.replace(
        QWEN3VL_30B_A3B,
        name=f"qwen3vl-30b-a3b-shape-L{layers}-V{vision_layers}",
        text={**QWEN3VL_30B_A3B.text, "num_hidden_layers": layers},
        vision={**QWEN3VL_30B_A3B.vision, "depth": depth, "deepstack_visual_indexes": deepstack},
    )


# Qwen3.5-2B: text 2048 wide, 24 layers, every 4th full attention (8 heads / 2 kv heads of 256,
# gated, a quarter rotated), the others gated delta rule (16 key / 16 value heads of 128, kernel
# 4), MLP 6144, vocab 248320, tied; vision (no DeepStack) as Qwen3-VL-2B's, 1024 wide, 24 blocks.
# Random weights; widths, depth and file layout (bf16 shards, transformers 5's config) as released.
QWEN3_5_2B = TinyPreset(
    "qwen3.5-2b-shape",
    text=dict(
        hidden_size=2048,
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=256,
        intermediate_size=6144,
        num_hidden_layers=24,
        mrope_section=(11, 11, 10),
        tie_word_embeddings=True,
    ),
    vision=dict(
        hidden_size=1024, num_heads=16, intermediate_size=4096, depth=24, deepstack_visual_indexes=(), num_position_embeddings=2304
    ),
    pixels=(65536, 16777216),
    hub_layout=True,
    rope_theta=10_000_000.0,
    linear=dict(
        linear_conv_kernel_dim=4,
        linear_key_head_dim=128,
        linear_value_head_dim=128,
        linear_num_key_heads=16,
        linear_num_value_heads=16,
        partial_rotary_factor=0.25,
    ),
    chat_template="qwen3_5",
)


def qwen3_5_2b_shape(layers: int = 24, vision_layers: int = 24) -> TinyPreset:
    """The Qwen3.5-2B shape with ``layers`` text layers (transformers' default order: every 4th
    full attention) and ``vision_layers`` vision blocks."""
    return dataclasses.replace(
        QWEN3_5_2B,
        name=f"qwen3.5-2b-shape-L{layers}-V{vision_layers}",
        text={**QWEN3_5_2B.text, "num_hidden_layers": layers},
        vision={**QWEN3_5_2B.vision, "depth": vision_layers},
        extra_vocab=248320 - 438,  # the tiny tokenizer has 438 entries; the model keeps 248320 rows
    )


SHAPES = {"qwen3-vl": qwen3vl_2b_shape, "qwen3.5": qwen3_5_2b_shape}


def _zero_centred_norms(model, tokenizer) -> None:
    """Qwen3.5's text RMSNorms scale by (1 + weight) (its gated one by weight). The writer's
    random gains near 1 would double every one of them: at 2048 wide the logits' spread was 27
    (Qwen3-VL-2B's shape: 14), and the random model so sensitive that 4-bit weights changed 84% of
    its greedy tokens (KL 25 against fp32). Centred on 0, as a trained model's are."""
    import torch

    with torch.no_grad():
        for module in model.model.language_model.modules():
            if type(module).__name__.endswith("RMSNorm"):
                module.weight.sub_(1.0)


def cached_checkpoint(preset: TinyPreset, cache: Path = DEFAULT_CACHE) -> Path:
    folder = cache / preset.name
    if not (folder / "config.json").is_file():
        edit = _zero_centred_norms if preset.linear is not None else None
        write_checkpoint(folder, preset, seed=0, shard_size="2GB", set_weights=edit)
    return folder


def checkpoint_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))
