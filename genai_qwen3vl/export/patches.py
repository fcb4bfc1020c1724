"""Scoped export patches for the HF vision tower.

Each patch is a context manager that installs a traceable replacement when its ``with`` is
entered and always restores the original when it is left. Which transformers classes they
replace comes from the architecture registry. ``tests/export/test_patches.py`` proves each one
equal to the unpatched module.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator

import torch

from ..model.architectures import QWEN3_VL, Architecture


def segment_ids_from_cu_seqlens(cu_seqlens: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Which attention segment (frame of an image) each of ``seq_len`` patches belongs to."""
    positions = torch.arange(seq_len, device=cu_seqlens.device)
    return (positions[:, None] >= cu_seqlens[None, 1:].to(positions.dtype)).sum(-1)


def block_diagonal_mask(segment_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive [P, P] mask: 0 inside a segment, the dtype's minimum across segments."""
    same = segment_ids[:, None] == segment_ids[None, :]
    zero = torch.zeros((), dtype=dtype, device=segment_ids.device)
    neg = torch.full((), torch.finfo(dtype).min, dtype=dtype, device=segment_ids.device)
    return torch.where(same, zero, neg)


# The fused attention placeholder the vision export emits; ``segment_attention.py`` replaces it.
SEGMENT_ATTENTION = "genai_qwen3vl::SegmentAttention"


def _masked_vision_attention_forward(
    self,
    hidden_states: torch.Tensor,
    cu_seqlens: torch.Tensor | None = None,
    position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
    attention_mask: torch.Tensor | None = None,
    segments: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    **kwargs,
) -> torch.Tensor:
    """HF ``Qwen3VLVisionAttention.forward`` with the per-segment ``torch.split`` loop
    (``.tolist()``, not traceable) replaced by one attention under a block-diagonal mask.

    During ONNX export with ``segments`` = (all segments equal?, segment length, segment ids)
    it emits a ``SegmentAttention`` placeholder instead, which the export turns into
    onnxruntime's fused ``MultiHeadAttention`` (see ``segment_attention.py``)."""
    # the rotary helper of the module that defines this attention class (one per architecture)
    apply_rotary_pos_emb_vision = sys.modules[type(self).__module__].apply_rotary_pos_emb_vision
    seq_len = hidden_states.shape[0]
    query, key, value = self.qkv(hidden_states).reshape(seq_len, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    cos, sin = position_embeddings
    query, key = apply_rotary_pos_emb_vision(query, key, cos, sin)
    if segments is not None and torch.onnx.is_in_onnx_export():
        width = self.num_heads * query.shape[-1]
        q, k, v = (x.reshape(1, seq_len, width) for x in (query, key, value))
        attn = torch.onnx.ops.symbolic(
            SEGMENT_ATTENTION, (q, k, v, *segments), {"num_heads": self.num_heads}, dtype=q.dtype, shape=q.shape, version=1
        )
        return self.proj(attn.reshape(seq_len, width))
    if attention_mask is None:
        attention_mask = block_diagonal_mask(segment_ids_from_cu_seqlens(cu_seqlens, seq_len), query.dtype)
    query, key, value = (x.transpose(0, 1) for x in (query, key, value))  # [heads, seq, head_dim]
    scores = torch.matmul(query, key.transpose(1, 2)) * self.scaling + attention_mask
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    attn = torch.matmul(probs, value).transpose(0, 1).reshape(seq_len, -1)
    return self.proj(attn)


@contextlib.contextmanager
def _replaced_forward(arch: Architecture, class_name: str, forward) -> Iterator[None]:
    """Install ``forward`` on transformers' class ``class_name`` of ``arch`` for the scope; the
    original is always restored."""
    cls = arch.transformers_class(class_name)
    original = cls.forward
    cls.forward = forward
    try:
        yield
    finally:
        cls.forward = original


def masked_vision_attention(arch: Architecture = QWEN3_VL) -> contextlib.AbstractContextManager:
    """The traceable vision attention on the architecture's vision attention class, for the scope."""
    return _replaced_forward(arch, arch.vision_attention_class, _masked_vision_attention_forward)


def _linear_patch_embed_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    """HF ``Qwen3VLVisionPatchEmbed.forward`` as one matmul: its Conv3d has stride == kernel over
    rows that are exactly one kernel window each, so it is a linear map of the flattened row.
    (ONNX Conv has no bf16 before opset 22, and a Gemm is faster than a 3D convolution.)"""
    weight = self.proj.weight
    flat = weight.reshape(weight.shape[0], -1)
    rows = hidden_states.reshape(-1, flat.shape[1]).to(weight.dtype)
    return torch.nn.functional.linear(rows, flat, self.proj.bias)


def linear_patch_embed(arch: Architecture = QWEN3_VL) -> contextlib.AbstractContextManager:
    """The matmul form of the vision patch embedding, for the scope."""
    return _replaced_forward(arch, arch.vision_patch_embed_class, _linear_patch_embed_forward)


@contextlib.contextmanager
def export_patches(arch: Architecture = QWEN3_VL) -> Iterator[None]:
    """All patches the vision export runs under, entered together when the ``with`` is entered
    and all restored when it is left (also when entering one of them fails)."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(masked_vision_attention(arch))
        stack.enter_context(linear_patch_embed(arch))
        yield
