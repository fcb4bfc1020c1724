"""Embedding export: token embeddings + visual features -> ``embedding.onnx``.

``inputs_embeds`` is (1+K)*H wide. At text tokens, channels [0:H] hold the token embedding and
the rest are zero; at image-pad and video-pad tokens the whole row is one of the vision graph's
feature rows (main features, then the K DeepStack features). As in transformers, image rows
fill the image-pad positions in order and the rows after them fill the video-pad positions in
order (``image_features`` holds all images' rows, then all videos' rows). The decoder adds the
DeepStack slices after its first K layers, where zeros make it a no-op.

og hands this graph ``image_features`` with 0 rows at decode steps, and a generated token may
equal a pad id; pads without a feature row get the plain token embedding, as in transformers.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..model import io_contract
from ..model.spec import Qwen3VLSpec
from .torch_export import export_to_onnx
from .weights import load_submodule_state


class EmbeddingExportModel(nn.Module):
    """``out_dtype`` is the float type the graphs exchange (og's decoder input dtype); the
    table, and the gather/select work, may be in another (fp32 for bf16 decoders: onnxruntime's
    CUDA provider has no bf16 Where)."""

    def __init__(self, embed_tokens: nn.Embedding, spec: Qwen3VLSpec, out_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.embed_tokens = embed_tokens
        self.out_dtype = out_dtype
        self.hidden = spec.text.hidden_size
        self.width = spec.feature_width
        self.image_token_id = spec.tokens.image_token_id
        self.video_token_id = spec.tokens.video_token_id

    def forward(self, input_ids: torch.Tensor, image_features: torch.Tensor) -> torch.Tensor:
        # computed in the table's dtype, handed over in out_dtype
        embeds = self.embed_tokens(input_ids)
        # zeros beside the token embedding (a Concat: ORT has no bf16 Pad kernel)
        text_rows = embeds
        if self.width > self.hidden:  # DeepStack's channels (none for Qwen3.5)
            text_rows = torch.cat([embeds, embeds.new_zeros(*embeds.shape[:-1], self.width - self.hidden)], dim=-1)
        flat = input_ids.reshape(-1)
        is_image = flat == self.image_token_id
        is_video = flat == self.video_token_id
        available = image_features.shape[0]
        image_order = torch.cumsum(is_image.to(torch.int64), dim=0) - 1
        image_rows = torch.clamp(is_image.to(torch.int64).sum(), max=available)
        video_row = image_rows + torch.cumsum(is_video.to(torch.int64), dim=0) - 1
        take_image = is_image & (image_order < available)
        take_video = is_video & (video_row < available)
        index = torch.where(take_image, image_order, torch.where(take_video, video_row, torch.full_like(flat, available)))
        rows = torch.cat([image_features.to(embeds.dtype), text_rows.new_zeros(1, self.width)], dim=0)
        gathered = rows[index].reshape(text_rows.shape)
        take = (take_image | take_video).reshape(input_ids.shape + (1,))
        return torch.where(take, gathered, text_rows).to(self.out_dtype)


def build_embedding_model(
    checkpoint_dir: str | Path, spec: Qwen3VLSpec, dtype=torch.float32, out_dtype=torch.float32
) -> EmbeddingExportModel:
    state = load_submodule_state(checkpoint_dir, spec.architecture.embedding_weight_prefixes, dtype)
    table = state["weight"]
    embed = nn.Embedding(table.shape[0], table.shape[1], _weight=table)
    return EmbeddingExportModel(embed, spec, out_dtype).eval()


def export_embedding(model: EmbeddingExportModel, spec: Qwen3VLSpec, out_dir: Path) -> Path:
    """Export ``embedding.onnx`` (+ external data) into ``out_dir``."""
    t = spec.tokens
    input_ids = torch.tensor([[1, t.image_token_id, t.image_token_id, 2, t.video_token_id], [3, 4, 5, 6, 7]])
    image_features = torch.randn(3, spec.feature_width).to(model.out_dtype)
    dynamic = {
        "input_ids": {0: torch.export.Dim("batch_size"), 1: torch.export.Dim("sequence_length")},
        "image_features": {0: torch.export.Dim("num_image_tokens")},
    }
    return export_to_onnx(model, (input_ids, image_features), io_contract.EMBEDDING, dynamic, out_dir)
