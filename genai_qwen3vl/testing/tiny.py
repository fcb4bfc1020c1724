"""Tiny random Qwen3-VL checkpoints, built locally and seeded.

Used by the tests, the built-in demo and the benchmarks (no model hub is needed). A checkpoint written
here has the same files a real Hugging Face Qwen3-VL checkpoint has: ``config.json``,
``generation_config.json``, ``model.safetensors``, a byte-level BPE ``tokenizer.json`` with
Qwen's special tokens (trained on the spot), ``tokenizer_config.json``, the chat template,
``preprocessor_config.json`` and ``video_preprocessor_config.json``.

This module gathers the names of the modules that do the work, one concern each:
``templates`` (Qwen3-VL's Instruct and Thinking chat templates), ``tokenizer`` (the small BPE with
Qwen's tokens), ``presets`` (the tiny dimensions: awkward on purpose, dense, MoE and Qwen3.5),
``checkpoint`` (the seeded weights and the files, in transformers' or the hub's layout) and
``scripted`` (``make_scripted_checkpoint``: a checkpoint whose greedy answer is known in advance,
SCRIPTED_OUTPUT, for tests of a server).
"""

from __future__ import annotations

from .checkpoint import build_config, make_tiny_checkpoint, write_checkpoint
from .presets import ALL_TINY_PRESETS, MOE_PRESETS, PRESETS, QWEN3_5_PRESETS, TinyPreset
from .scripted import (
    SCRIPTED_LOGIT,
    SCRIPTED_OUTPUT,
    SCRIPTED_PIECES,
    SCRIPTED_PRESET,
    SCRIPTED_REASONING,
    SCRIPTED_TOOL_JSON,
    make_scripted_checkpoint,
    scripted_token_ids,
)
from .templates import CHAT_TEMPLATE, CHAT_TEMPLATES, THINKING_CHAT_TEMPLATE
from .tokenizer import ADDED_TOKENS, QWEN3_5_SPLIT_REGEX, QWEN_SPLIT_REGEX, SPECIAL_TOKENS, hf_tokenizer, train_tokenizer

__all__ = [
    "ADDED_TOKENS",
    "ALL_TINY_PRESETS",
    "CHAT_TEMPLATE",
    "CHAT_TEMPLATES",
    "MOE_PRESETS",
    "PRESETS",
    "QWEN3_5_PRESETS",
    "QWEN3_5_SPLIT_REGEX",
    "QWEN_SPLIT_REGEX",
    "SCRIPTED_LOGIT",
    "SCRIPTED_OUTPUT",
    "SCRIPTED_PIECES",
    "SCRIPTED_PRESET",
    "SCRIPTED_REASONING",
    "SCRIPTED_TOOL_JSON",
    "SPECIAL_TOKENS",
    "THINKING_CHAT_TEMPLATE",
    "TinyPreset",
    "build_config",
    "hf_tokenizer",
    "make_scripted_checkpoint",
    "make_tiny_checkpoint",
    "scripted_token_ids",
    "train_tokenizer",
    "write_checkpoint",
]
