"""The CUDA targets (fp32, fp16, bf16, int4 for -e cuda): graph dtypes and providers checked here;
numerics checked on onnxruntime's CPU provider where it has the kernels (everything but bf16
decoders), and on a CUDA device by the tests marked ``cuda`` (skipped where there is none)."""

import json

import onnx
import pytest

from genai_qwen3vl.model import io_contract
from genai_qwen3vl.verify.artifacts import decoder_parity, embedding_parity, vision_parity
from genai_qwen3vl.verify.compare import assert_within
from genai_qwen3vl.verify.reference import dequantized_reference, in_dtype
from genai_qwen3vl.verify.validate import checkable_variant, reference_for

from ..helpers import check_generation_case, run_cli, targets

CUDA_TARGETS = targets("fp32/cuda", "fp16/cuda", "bf16/cuda", "int4/cuda")
PRESETS = ("awkward", "deep")
ONNX_TYPES = {"fp32": onnx.TensorProto.FLOAT, "fp16": onnx.TensorProto.FLOAT16, "bf16": onnx.TensorProto.BFLOAT16}


def _io_types(path):
    model = onnx.load(str(path), load_external_data=False)
    return {v.name: v.type.tensor_type.elem_type for v in list(model.graph.input) + list(model.graph.output)}


@pytest.mark.og_behaviour(version="0.18.0", what="its builder writes float32 logits for bf16 decoders")
@pytest.mark.parametrize("target", CUDA_TARGETS)
def test_cuda_exports_have_the_right_dtypes_and_provider(target, exported):
    out = exported("awkward", *target.flags)
    cfg = json.loads((out / "genai_config.json").read_text())
    for section in ("decoder", "embedding", "vision"):
        assert cfg["model"][section]["session_options"]["provider_options"] == [{"cuda": dict(target.provider_options)}], section
    # fp32 stays fp32 on the GPU (onnxruntime's CUDA provider would round its matrix products to TF32)
    assert ("use_tf32", "0") in target.provider_options if target.precision == "fp32" else not target.provider_options
    assert cfg["search"]["past_present_share_buffer"] is target.past_present_share_buffer
    io = ONNX_TYPES[target.io_dtype]
    vision, embedding, decoder = (_io_types(out / c.filename) for c in (io_contract.VISION, io_contract.EMBEDDING, io_contract.DECODER))
    assert vision["pixel_values"] == onnx.TensorProto.FLOAT  # what og's and our processors hand over
    assert vision["image_features"] == embedding["image_features"] == io
    assert embedding["inputs_embeds"] == decoder["inputs_embeds"] == io
    # og's builder keeps float32 logits for bf16 decoders
    assert decoder["logits"] == (onnx.TensorProto.FLOAT if target.io_dtype == "bf16" else io)
    weights = {t.data_type for t in onnx.load(str(out / "vision.onnx"), load_external_data=False).graph.initializer if len(t.dims) > 1}
    assert weights == {ONNX_TYPES[target.vision_dtype]}


@pytest.mark.parity(artifact="vision")
@pytest.mark.parity(artifact="embedding")
@pytest.mark.parity(artifact="decoder")
@pytest.mark.parametrize("target", targets("fp16/cuda"))
@pytest.mark.parametrize("preset", PRESETS)
def test_fp16_graphs_match_transformers_fp16(preset, target, exported, reference, record_parity):
    out = exported(preset, *target.flags)
    ref16 = in_dtype(reference(preset), "fp16")
    tol = target.tolerance
    vision = vision_parity(out, ref16, [[1, 4, 6], [2, 2, 4]])
    embedding = embedding_parity(out, ref16)
    decoder = decoder_parity(out, ref16, seed=3, prompt_len=10, decode_steps=3)
    record_parity({**{f"vision {k}": v for k, v in vision.items()}, "embedding": max(embedding.values()), **decoder})
    assert_within(vision, tol.vision, f"fp16 vision ({preset})")
    assert_within(embedding, tol.embedding, f"fp16 embedding ({preset})")
    assert_within(decoder, tol.decoder, f"fp16 decoder ({preset})")


@pytest.mark.parity(artifact="end_to_end")
@pytest.mark.parametrize("target", targets("fp16/cuda", "fp32/cuda", "int4/cuda"))
@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("case", ["one_image", "two_images"])
def test_cuda_targets_through_og_on_cpu_match_transformers(preset, case, target, exported, reference, tmp_path, record_parity):
    """og with the CPU provider on the CUDA-targeted graphs, against transformers in the target's
    reference dtype (on the dequantized weights for int4)."""
    out = exported(preset, *target.flags)
    folder = checkable_variant(out, target, tmp_path)
    ref = reference_for(reference(preset), target, out)
    check_generation_case(folder, ref, case, target.tolerance, record_parity, f"{target.precision}/cuda {preset}/{case} on CPU")


@pytest.mark.parity(artifact="decoder")
@pytest.mark.parametrize("target", targets("int4/cuda"))
def test_int4_cuda_decoder_matches_dequantized_weights_in_fp16(target, exported, reference, record_parity):
    out = exported("deep", *target.flags)
    ref = in_dtype(dequantized_reference(reference("deep"), out), "fp16")
    report = decoder_parity(out, ref, seed=4, prompt_len=10, decode_steps=3)
    record_parity(report)
    assert_within(report, target.tolerance.decoder, "int4 CUDA-target decoder, run on CPU")


@pytest.mark.parity(artifact="vision")
@pytest.mark.parity(artifact="embedding")
@pytest.mark.parametrize("target", targets("bf16/cuda"))
@pytest.mark.parametrize("preset", PRESETS)
def test_bf16_vision_and_embedding_match_transformers(preset, target, exported, reference, tmp_path, record_parity):
    """bf16 exports compute vision and embedding in fp32 and hand bf16 features over: equal to
    transformers (fp32) up to bf16 rounding (read through float32 graph boundaries)."""
    folder = checkable_variant(exported(preset, *target.flags), target, tmp_path)
    vision = vision_parity(folder, reference(preset), [[1, 4, 6], [2, 2, 4]])
    embedding = embedding_parity(folder, reference(preset))
    record_parity({**vision, "embedding": max(embedding.values())})
    assert_within(vision, target.tolerance.vision, f"bf16 vision ({preset})")
    assert_within(embedding, target.tolerance.embedding, f"bf16 embedding ({preset})")


@pytest.mark.cuda
@pytest.mark.parity(artifact="vision")
@pytest.mark.parity(artifact="embedding")
@pytest.mark.parity(artifact="decoder")
@pytest.mark.parity(artifact="end_to_end")
@pytest.mark.parametrize("target", CUDA_TARGETS)
@pytest.mark.parametrize("preset", (*PRESETS, "moe_hub"))
@pytest.mark.parametrize("case", ["one_image", "two_images"])
def test_cuda_through_og_matches_transformers(preset, case, target, exported, reference, record_parity):
    """On a CUDA device: og with the cuda provider, as exported, against transformers in the
    target's dtype on the GPU (bf16 in bf16; int4 on the dequantized weights in fp16); a
    Qwen3-VL-MoE checkpoint against transformers fp32 (its half-precision expert layers sum the
    experts in half precision, onnxruntime's MoE in float: see verify/validate.reference_for)."""
    out = exported(preset, *target.flags)
    ref = reference(preset)
    if target.quantized:
        ref = dequantized_reference(ref, out)
    dtype = "bf16" if target.io_dtype == "bf16" else target.reference_dtype
    ref = in_dtype(ref, "fp32" if ref.spec.text.experts is not None else dtype, device="cuda")
    check_generation_case(out, ref, case, target.tolerance, record_parity, f"{target.precision} cuda {preset}/{case}")


@pytest.mark.parametrize("case", ["hidden", "expert_width"])
def test_int4_cuda_moe_needs_widths_that_are_multiples_of_64(case, checkpoints, tmp_path):
    """onnxruntime's CUDA QMoE kernel refuses a hidden size (96 on an H200) or an expert width (32)
    that is no multiple of 64 at the first step, after an export that succeeded: the export refuses
    it up front, in one line, and writes nothing (the `moe` preset is 48 wide; `moe_hub` with
    experts 32 wide is 128 wide)."""
    if case == "hidden":
        checkpoint, needle = checkpoints("moe"), "hidden_size=48 is not a multiple of 64"
    else:
        import dataclasses

        from genai_qwen3vl.testing.presets import MOE_PRESETS
        from genai_qwen3vl.testing.tiny import make_tiny_checkpoint

        hub = MOE_PRESETS["moe_hub"]
        narrow = dataclasses.replace(hub, name="moe_hub_narrow", moe={**hub.moe, "moe_intermediate_size": 32})
        checkpoint, needle = make_tiny_checkpoint(tmp_path / "ckpt", narrow, seed=3), "moe_intermediate_size=32 is not a multiple of 64"
    out = tmp_path / "out"
    proc = run_cli("-i", checkpoint, "-o", out, "-p", "int4", "-e", "cuda")
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr and "-p fp16 -e cuda" in proc.stderr
    assert "Traceback" not in proc.stderr and [line for line in proc.stderr.splitlines() if line.startswith("error:")] == [
        proc.stderr.strip().splitlines()[-1]
    ], proc.stderr
    assert not out.exists()
