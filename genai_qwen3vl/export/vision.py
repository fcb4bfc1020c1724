"""Vision tower export: HF ``Qwen3VLVisionModel`` -> ``vision.onnx``.

The graph takes ``pixel_values`` [num_patches, 3*T*P*P] and ``image_grid_thw`` [num_images, 3]
and returns ``image_features`` [num_patches / merge^2, (1+K)*H]: the main merger output and
the K DeepStack merger outputs side by side on the last axis.

What the HF forward does with Python lists (per-image position ids, cu_seqlens splits, the
position-embedding interpolation's ``repeat_interleave``) is done here with tensor arithmetic
on ``image_grid_thw``, so one graph serves any number of images of any sizes.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError
from ..model import io_contract
from ..model.spec import Qwen3VLSpec
from .patches import block_diagonal_mask, export_patches
from .torch_export import export_to_onnx
from .weights import load_submodule_state


def patch_layout(grid_thw: torch.Tensor, num_patches, merge: int):
    """Per patch, in the processor's order (merge-block order within each frame):
    segment id (one per frame of each image), row, column, and its image's height and width
    in patches. Pure tensor arithmetic, so it traces with a symbolic grid."""
    grid = grid_thw.to(torch.int64)
    t, h, w = grid[:, 0], grid[:, 1], grid[:, 2]
    counts = t * h * w
    ends = torch.cumsum(counts, 0)
    starts = ends - counts
    frame_starts = torch.cumsum(t, 0) - t
    p = torch.arange(num_patches, device=grid.device, dtype=torch.int64)
    image = (p[:, None] >= ends[None, :]).sum(-1).clamp(max=grid.shape[0] - 1)
    height, width = h[image], w[image]
    local = p - starts[image]
    frame_size = height * width
    segment = frame_starts[image] + local // frame_size
    within = local % frame_size
    blocks_w = width // merge
    in_col = within % merge
    in_row = (within // merge) % merge
    block_col = (within // (merge * merge)) % blocks_w
    block_row = within // (merge * merge * blocks_w)
    row = block_row * merge + in_row
    col = block_col * merge + in_col
    return segment, row, col, height, width


def interpolated_position_embedding(
    table: torch.Tensor, row: torch.Tensor, col: torch.Tensor, height: torch.Tensor, width: torch.Tensor
) -> torch.Tensor:
    """Bilinear (align_corners=True) resampling of the square learned position table to each
    patch's (row, col) on its image's (height, width) grid, as HF does it."""
    side = int(round(table.shape[0] ** 0.5))

    def taps(index, size):
        src = index.to(torch.float32) * (side - 1) / torch.clamp(size - 1, min=1)
        lo = torch.floor(src)
        frac = src - lo
        lo_i = lo.to(torch.int64).clamp(0, side - 1)
        hi_i = (lo_i + 1).clamp(max=side - 1)
        return (lo_i, hi_i), (1 - frac, frac)

    (h0, h1), (wh0, wh1) = taps(row, height)
    (w0, w1), (ww0, ww1) = taps(col, width)
    out = None
    for hi, wh in ((h0, wh0), (h1, wh1)):
        for wi, ww in ((w0, ww0), (w1, ww1)):
            term = table[hi * side + wi] * (wh * ww)[:, None].to(table.dtype)
            out = term if out is None else out + term
    return out


class VisionExportModel(nn.Module):
    """The HF vision tower behind a graph-friendly forward. Holds HF's module as ``visual``
    so checkpoint weights load without renaming.

    ``pixel_values`` is always float32 (what og's and our processors produce); the tower runs in
    its weights' dtype, as transformers runs it (rotary and softmax in float32 inside HF's
    attention, LayerNorm accumulating in float32 in onnxruntime), and the features leave in
    ``out_dtype``, the float type the embedding and decoder graphs exchange."""

    def __init__(self, visual: nn.Module, out_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.visual = visual
        self.merge = visual.spatial_merge_size
        self.deepstack_indexes = list(getattr(visual, "deepstack_visual_indexes", ()))  # Qwen3.5's tower has none
        self.out_dtype = out_dtype

    def forward(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> torch.Tensor:
        v = self.visual
        segment, row, col, height, width = patch_layout(image_grid_thw, pixel_values.shape[0], self.merge)
        hidden = v.patch_embed(pixel_values)
        hidden = hidden + interpolated_position_embedding(v.pos_embed.weight, row, col, height, width).to(hidden.dtype)
        position_embeddings = v.rotary_pos_emb(hidden, torch.stack([row, col], dim=-1))
        attention: dict = {}
        if torch.onnx.is_in_onnx_export():
            # the fused attention's inputs: are all frames the same size, that size, frame ids
            frame = image_grid_thw[:, 1] * image_grid_thw[:, 2]
            attention["segments"] = ((frame.min() == frame.max()), frame[:1].to(torch.int64), segment)
        else:
            attention["attention_mask"] = block_diagonal_mask(segment, hidden.dtype)
        features = []
        for index, block in enumerate(v.blocks):
            hidden = block(hidden, cu_seqlens=None, position_embeddings=position_embeddings, **attention)
            if index in self.deepstack_indexes:
                features.append(v.deepstack_merger_list[self.deepstack_indexes.index(index)](hidden))
        return torch.cat([v.merger(hidden), *features], dim=-1).to(self.out_dtype)


def build_vision_model(checkpoint_dir: str | Path, spec: Qwen3VLSpec, dtype=torch.float32, out_dtype=torch.float32) -> VisionExportModel:
    """Instantiate transformers' own vision tower (never code shipped with the checkpoint) and
    load only its weights from the checkpoint."""
    import transformers

    arch = spec.architecture
    config = getattr(transformers, arch.config_class).from_pretrained(str(checkpoint_dir))
    vision_config = config.vision_config
    vision_config._attn_implementation = "eager"
    with torch.device("meta"):
        visual = arch.transformers_class(arch.vision_class)(vision_config)
    state = load_submodule_state(checkpoint_dir, arch.vision_weight_prefixes, dtype)
    expected = set(visual.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        prefix = arch.vision_weight_prefixes[0]
        problem = (
            f"lacks {len(missing)} vision tensors ({prefix}{missing[0]}, ...)"
            if missing
            else (f"has {len(unexpected)} vision tensors this vision config does not use ({prefix}{unexpected[0]}, ...)")
        )
        raise CheckpointError(f"{checkpoint_dir} {problem}; re-download it, or check that config.json belongs to these weights")
    visual.load_state_dict(state, strict=True, assign=True)
    # non-persistent buffers (rotary inv_freq) are not in the checkpoint: rebuild them
    visual.rotary_pos_emb = type(visual.rotary_pos_emb)(vision_config)
    return VisionExportModel(visual.to(dtype), out_dtype).eval()


def example_inputs(spec: Qwen3VLSpec):
    """Two images of different grids (one of them two frames): keeps every dim symbolic."""
    m = spec.vision.spatial_merge_size
    grid = torch.tensor([[1, 2 * m, 3 * m], [2, 3 * m, m]], dtype=torch.int64)
    patches = int((grid[:, 0] * grid[:, 1] * grid[:, 2]).sum())
    gen = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(patches, spec.vision.patch_dim, generator=gen)
    return pixel_values, grid


def export_vision(model: VisionExportModel, spec: Qwen3VLSpec, out_dir: Path) -> Path:
    """Export ``vision.onnx`` (+ external data) into ``out_dir``."""
    dynamic = {
        "pixel_values": {0: torch.export.Dim("num_patches", min=4)},
        "image_grid_thw": {0: torch.export.Dim("num_images", min=1)},
    }
    path = export_to_onnx(model, example_inputs(spec), io_contract.VISION, dynamic, out_dir, export_patches(spec.architecture))
    from .segment_attention import fuse_segment_attention

    return fuse_segment_attention(path)
