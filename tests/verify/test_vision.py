"""vision.onnx against transformers' vision tower: the main features and every DeepStack set."""

import numpy as np
import onnx
import pytest
import torch

from genai_qwen3vl.export.vision import interpolated_position_embedding, patch_layout
from genai_qwen3vl.model import io_contract
from genai_qwen3vl.verify.artifacts import vision_parity
from genai_qwen3vl.verify.compare import assert_within

from ..conftest import ALL_PRESETS
from ..helpers import targets

GRIDS = {
    "one_image": [[1, 4, 6]],
    "two_sizes": [[1, 8, 4], [1, 6, 10]],
    "same_size": [[1, 6, 6], [1, 6, 6]],
    "two_frames": [[2, 4, 4]],
    "four_small": [[1, 2, 2], [1, 2, 2], [1, 4, 2], [1, 2, 4]],
    "wide": [[1, 2, 20]],
}


@pytest.mark.parity(artifact="vision")
@pytest.mark.parametrize("target", targets("fp32/cpu"))
@pytest.mark.parametrize("preset", ALL_PRESETS)
@pytest.mark.parametrize("case", list(GRIDS))
def test_vision_matches_transformers(preset, case, target, exported, reference, record_parity):
    report = vision_parity(exported(preset, *target.flags), reference(preset), GRIDS[case], seed=len(case))
    assert set(report) == {"main"} | {f"deepstack.{k}" for k in range(reference(preset).spec.num_deepstack)}
    record_parity(report)
    assert_within(report, target.tolerance.vision, f"vision ({preset}, {case})")


def test_vision_grid_dims_are_symbolic(exported):
    """og calls the graph with all images at once only when image_grid_thw dim 0 is symbolic."""
    model = onnx.load(str(exported("awkward") / io_contract.VISION.filename), load_external_data=False)
    grid = next(i for i in model.graph.input if i.name == "image_grid_thw")
    assert grid.type.tensor_type.shape.dim[0].dim_param == "num_images"


def test_patch_layout_matches_hf_position_ids():
    """Our arithmetic (row, col) per patch equals transformers' get_vision_position_ids."""
    from transformers.vision_utils import get_vision_position_ids

    grid = torch.tensor([[1, 4, 6], [2, 6, 2], [1, 2, 2]])
    n = int((grid[:, 0] * grid[:, 1] * grid[:, 2]).sum())
    segment, row, col, _, _ = patch_layout(grid, n, 2)
    expected = get_vision_position_ids(grid, 2)
    assert torch.equal(torch.stack([row, col], -1), expected)
    # one segment per frame of each image, in order
    frames = torch.repeat_interleave(grid[:, 1] * grid[:, 2], grid[:, 0])
    assert torch.equal(segment, torch.repeat_interleave(torch.arange(len(frames)), frames))


def test_position_embedding_interpolation_matches_hf():
    from transformers.vision_utils import get_vision_interpolation_indices_and_weights

    table = torch.randn(36, 8)
    grid = torch.tensor([[1, 4, 10], [1, 12, 2]])
    n = int((grid[:, 0] * grid[:, 1] * grid[:, 2]).sum())
    _, row, col, h, w = patch_layout(grid, n, 2)
    ours = interpolated_position_embedding(table, row, col, h, w)
    idx, weights = get_vision_interpolation_indices_and_weights(
        grid, num_grid_per_side=6, mode="bilinear", align_corners=True, spatial_merge_size=2
    )
    theirs = (torch.nn.functional.embedding(idx, table) * weights[:, :, None]).sum(1)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-6)
