"""Embedding export: token embeddings + visual features -> ``embedding.onnx``.

``inputs_embeds`` is (1+K)*H wide. At text tokens, channels [0:H] hold the token embedding and
the rest are zero; at image/video-pad tokens the whole row is the vision graph's feature row
(main features, then the K DeepStack features), taken in order. The decoder adds the DeepStack
slices after its first K layers, where zeros make it a no-op.

og hands this graph ``image_features`` with 0 rows at decode steps, and a generated token may
equal the image-pad id; such tokens (more pads than feature rows) get the plain token
embedding, as in transformers.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from . import io_contract
from .spec import Qwen3VLSpec
from .torch_export import export_to_onnx
from .weights import load_submodule_state


class EmbeddingExportModel(nn.Module):
    def __init__(self, embed_tokens: nn.Embedding, spec: Qwen3VLSpec):
        super().__init__()
        self.embed_tokens = embed_tokens
        self.hidden = spec.text.hidden_size
        self.width = spec.feature_width
        self.image_token_id = spec.tokens.image_token_id
        self.video_token_id = spec.tokens.video_token_id

    def forward(self, input_ids: torch.Tensor, image_features: torch.Tensor) -> torch.Tensor:
        embeds = self.embed_tokens(input_ids)
        text_rows = nn.functional.pad(embeds, (0, self.width - self.hidden))
        is_visual = ((input_ids == self.image_token_id) | (input_ids == self.video_token_id)).reshape(-1)
        order = torch.cumsum(is_visual.to(torch.int64), dim=0) - 1
        available = image_features.shape[0]
        take = is_visual & (order < available)
        rows = torch.cat([image_features.to(embeds.dtype), text_rows.new_zeros(1, self.width)], dim=0)
        index = torch.where(take, order, torch.full_like(order, available))
        gathered = rows[index].reshape(text_rows.shape)
        return torch.where(take.reshape(input_ids.shape + (1,)), gathered, text_rows)


def build_embedding_model(checkpoint_dir: str | Path, spec: Qwen3VLSpec, dtype=torch.float32) -> EmbeddingExportModel:
    state = load_submodule_state(
        checkpoint_dir, ("model.language_model.embed_tokens.", "model.embed_tokens."), dtype
    )
    table = state["weight"]
    embed = nn.Embedding(table.shape[0], table.shape[1], _weight=table)
    return EmbeddingExportModel(embed, spec).eval()


def export_embedding(model: EmbeddingExportModel, spec: Qwen3VLSpec, out_dir: Path, dtype=torch.float32) -> Path:
    """Export ``embedding.onnx`` (+ external data) into ``out_dir``."""
    t = spec.tokens
    input_ids = torch.tensor([[1, t.image_token_id, t.image_token_id, 2, t.video_token_id], [3, 4, 5, 6, 7]])
    image_features = torch.randn(3, spec.feature_width).to(dtype)
    dynamic = {
        "input_ids": {0: torch.export.Dim("batch_size"), 1: torch.export.Dim("sequence_length")},
        "image_features": {0: torch.export.Dim("num_image_tokens")},
    }
    return export_to_onnx(model, (input_ids, image_features), io_contract.EMBEDDING, dynamic, out_dir)
