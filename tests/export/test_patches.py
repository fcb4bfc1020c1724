"""Each export patch equals the unpatched transformers module, is installed only inside its
``with``, and is always restored."""

import pytest
import torch

from genai_qwen3vl.export.patches import export_patches, linear_patch_embed, masked_vision_attention
from genai_qwen3vl.model.architectures import QWEN3_VL


def test_masked_attention_equals_hf_vision_tower(reference):
    visual = reference("awkward").model.model.visual
    grid = torch.tensor([[1, 4, 6], [2, 2, 4], [1, 2, 2]])
    pixels = torch.randn(int((grid[:, 0] * grid[:, 1] * grid[:, 2]).sum()), 1536, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        plain = visual(pixels, grid_thw=grid)
        with masked_vision_attention():
            patched = visual(pixels, grid_thw=grid)
    torch.testing.assert_close(patched.pooler_output, plain.pooler_output, atol=1e-5, rtol=0)
    for a, b in zip(patched.deepstack_features, plain.deepstack_features, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_linear_patch_embed_equals_hf_conv3d(reference):
    embed = reference("tied").model.model.visual.patch_embed
    pixels = torch.randn(37, 1536, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        plain = embed(pixels)
        with linear_patch_embed():
            patched = embed(pixels)
    torch.testing.assert_close(patched, plain, atol=1e-5, rtol=0)


def _forwards():
    return tuple(QWEN3_VL.transformers_class(name).forward for name in (QWEN3_VL.vision_attention_class, QWEN3_VL.vision_patch_embed_class))


def test_export_patches_apply_inside_the_with_only():
    """Calling export_patches() installs nothing: a failure between the call and the ``with``
    cannot leave transformers patched."""
    original = _forwards()
    patches = export_patches()
    assert _forwards() == original
    with patches:
        assert all(a is not b for a, b in zip(_forwards(), original, strict=True))
    assert _forwards() == original
    del patches  # never entered: nothing to undo
    assert _forwards() == original


@pytest.mark.parametrize("make", [export_patches, masked_vision_attention, linear_patch_embed])
def test_patches_restore_on_error(make):
    original = _forwards()
    with pytest.raises(RuntimeError, match="boom"):
        with make():
            assert _forwards() != original
            raise RuntimeError("boom")
    assert _forwards() == original
