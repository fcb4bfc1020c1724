"""Each export patch equals the unpatched transformers module, and always restores it."""

import pytest
import torch

from genai_qwen3vl.patches import export_patches, linear_patch_embed, masked_vision_attention


def test_masked_attention_equals_hf_vision_tower(reference):
    visual = reference("awkward").model.model.visual
    grid = torch.tensor([[1, 4, 6], [2, 2, 4], [1, 2, 2]])
    pixels = torch.randn(int((grid[:, 0] * grid[:, 1] * grid[:, 2]).sum()), 1536, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        plain = visual(pixels, grid_thw=grid)
        with masked_vision_attention():
            patched = visual(pixels, grid_thw=grid)
    torch.testing.assert_close(patched.pooler_output, plain.pooler_output, atol=1e-5, rtol=0)
    for a, b in zip(patched.deepstack_features, plain.deepstack_features):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_patches_restore_on_error():
    from transformers.models.qwen3_vl import modeling_qwen3_vl as hf

    original = hf.Qwen3VLVisionAttention.forward
    with pytest.raises(RuntimeError):
        with export_patches():
            assert hf.Qwen3VLVisionAttention.forward is not original
            raise RuntimeError("boom")
    assert hf.Qwen3VLVisionAttention.forward is original


def test_linear_patch_embed_equals_hf_conv3d(reference):
    embed = reference("tied").model.model.visual.patch_embed
    pixels = torch.randn(37, 1536, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        plain = embed(pixels)
        with linear_patch_embed():
            patched = embed(pixels)
    torch.testing.assert_close(patched, plain, atol=1e-5, rtol=0)
