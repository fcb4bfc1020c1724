"""fp16 / bf16 / int4 for CUDA: graph dtypes and providers checked here; numerics checked on
ORT's CPU provider where it has the kernels (fp16 everywhere, bf16 vision and embedding), and on
a CUDA device by the tests marked ``cuda`` (skipped where there is none)."""

import copy
import json
import shutil
from pathlib import Path

import onnx
import pytest
import torch

from genai_qwen3vl import io_contract
from genai_qwen3vl.parity import (
    Reference,
    assert_within,
    decoder_parity,
    dequantized_reference,
    embedding_parity,
    vision_parity,
)
from genai_qwen3vl.tolerances import tolerance

from .conftest import check_generation_case

FP16 = ("-p", "fp16", "-e", "cuda")
BF16 = ("-p", "bf16", "-e", "cuda")
INT4_CUDA = ("-p", "int4", "-e", "cuda")
PRESETS = ("awkward", "deep")


def _cuda_available() -> bool:
    try:
        import onnxruntime as ort

        return "CUDAExecutionProvider" in ort.get_available_providers()
    except Exception:
        return False


cuda = pytest.mark.skipif(not _cuda_available(), reason="needs onnxruntime-genai-cuda and a CUDA device")


def _in_dtype(ref: Reference, dtype) -> Reference:
    return Reference(spec=ref.spec, model=copy.deepcopy(ref.model).to(dtype), processor=ref.processor)


def _on_cpu(out: Path, tmp: Path) -> Path:
    """A copy of an export whose genai_config asks for the CPU provider (to run CUDA-targeted
    fp16 graphs on ORT's CPU kernels)."""
    copy_dir = tmp / f"{out.parent.name}_cpu"
    if not copy_dir.exists():
        shutil.copytree(out, copy_dir)
        cfg = json.loads((copy_dir / "genai_config.json").read_text())
        for section in ("decoder", "embedding", "vision"):
            cfg["model"][section]["session_options"]["provider_options"] = []
        (copy_dir / "genai_config.json").write_text(json.dumps(cfg))
    return copy_dir


def _float_boundaries(path: Path) -> Path:
    """A copy of a graph (beside it, sharing its weights file) with float32 in place of bf16 at
    its inputs and outputs (same names, casts inside), so Python can feed and read it."""
    model = onnx.load(str(path), load_external_data=False)
    g = model.graph
    bf16, f32 = onnx.TensorProto.BFLOAT16, onnx.TensorProto.FLOAT

    def rename(old, new):
        for node in g.node:
            node.input[:] = [new if x == old else x for x in node.input]
            node.output[:] = [new if x == old else x for x in node.output]

    for value in g.input:
        if value.type.tensor_type.elem_type == bf16:
            inner = value.name + "/bf16"
            rename(value.name, inner)
            value.type.tensor_type.elem_type = f32
            g.node.insert(0, onnx.helper.make_node("Cast", [value.name], [inner], to=bf16, name=inner + "/Cast"))
    for value in g.output:
        if value.type.tensor_type.elem_type == bf16:
            inner = value.name + "/bf16"
            rename(value.name, inner)
            value.type.tensor_type.elem_type = f32
            g.node.append(onnx.helper.make_node("Cast", [inner], [value.name], to=f32, name=inner + "/Cast"))
    copy_path = path.with_name(path.stem + ".f32io.onnx")
    onnx.save(model, str(copy_path))
    return copy_path


def _io_types(path: Path) -> dict:
    model = onnx.load(str(path), load_external_data=False)
    return {v.name: v.type.tensor_type.elem_type for v in list(model.graph.input) + list(model.graph.output)}


@pytest.mark.parametrize("flags,io", [(FP16, onnx.TensorProto.FLOAT16), (BF16, onnx.TensorProto.BFLOAT16), (INT4_CUDA, onnx.TensorProto.FLOAT16)])
def test_cuda_exports_have_the_right_dtypes_and_provider(flags, io, exported):
    out = exported("awkward", *flags)
    cfg = json.loads((out / "genai_config.json").read_text())
    for section in ("decoder", "embedding", "vision"):
        assert cfg["model"][section]["session_options"]["provider_options"] == [{"cuda": {}}], section
    vision, embedding, decoder = (_io_types(out / c.filename) for c in (io_contract.VISION, io_contract.EMBEDDING, io_contract.DECODER))
    assert vision["pixel_values"] == onnx.TensorProto.FLOAT  # what og's and our processors hand over
    assert vision["image_features"] == embedding["image_features"] == io
    assert embedding["inputs_embeds"] == decoder["inputs_embeds"] == io
    # og's builder keeps float32 logits for bf16 decoders
    assert decoder["logits"] == (onnx.TensorProto.FLOAT if io == onnx.TensorProto.BFLOAT16 else io)
    weights = {t.data_type for t in onnx.load(str(out / "vision.onnx"), load_external_data=False).graph.initializer if len(t.dims) > 1}
    assert weights == {onnx.TensorProto.FLOAT if flags == BF16 else onnx.TensorProto.FLOAT16}


@pytest.mark.parity(artifact="vision")
@pytest.mark.parity(artifact="embedding")
@pytest.mark.parity(artifact="decoder")
@pytest.mark.parametrize("precision", ["fp16"])
@pytest.mark.parametrize("preset", PRESETS)
def test_fp16_graphs_match_transformers_fp16(preset, precision, exported, reference, record_parity):
    out = exported(preset, *FP16)
    ref16 = _in_dtype(reference(preset), torch.float16)
    tol = tolerance(precision)
    vision = vision_parity(out, ref16, [[1, 4, 6], [2, 2, 4]])
    embedding = embedding_parity(out, ref16)
    decoder = decoder_parity(out, ref16, seed=3, prompt_len=10, decode_steps=3)
    record_parity({**{f"vision {k}": v for k, v in vision.items()}, "embedding": max(embedding.values()), **decoder})
    assert_within(vision, tol.vision, f"fp16 vision ({preset})")
    assert_within(embedding, tol.embedding, f"fp16 embedding ({preset})")
    assert_within(decoder, tol.decoder, f"fp16 decoder ({preset})")


@pytest.mark.parity(artifact="end_to_end")
@pytest.mark.parametrize("precision", ["fp16"])
@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("case", ["one_image", "two_images"])
def test_fp16_through_og_on_cpu_matches_transformers_fp16(preset, case, precision, exported, reference, tmp_path_factory, record_parity):
    out = _on_cpu(exported(preset, *FP16), tmp_path_factory.mktemp("cpu"))
    check_generation_case(out, _in_dtype(reference(preset), torch.float16), case, precision, record_parity, f"fp16 {preset}/{case}")


@pytest.mark.parity(artifact="decoder")
@pytest.mark.parametrize("precision", ["fp16"])
def test_int4_cuda_decoder_matches_dequantized_weights_in_fp16(precision, exported, reference, record_parity):
    out = exported("deep", *INT4_CUDA)
    ref = _in_dtype(dequantized_reference(reference("deep"), out), torch.float16)
    report = decoder_parity(out, ref, seed=4, prompt_len=10, decode_steps=3)
    record_parity(report)
    assert_within(report, tolerance(precision).decoder, "int4 CUDA-target decoder, run on CPU")


@pytest.mark.parity(artifact="vision")
@pytest.mark.parity(artifact="embedding")
@pytest.mark.parametrize("precision", ["bf16"])
@pytest.mark.parametrize("preset", PRESETS)
def test_bf16_vision_and_embedding_match_transformers(preset, precision, exported, reference, tmp_path, record_parity):
    """bf16 exports compute vision and embedding in fp32 and hand bf16 features over: equal to
    transformers (fp32) up to bf16 rounding."""
    out = exported(preset, *BF16)
    work = tmp_path / "bf16"
    shutil.copytree(out, work)
    for contract in (io_contract.VISION, io_contract.EMBEDDING):
        _float_boundaries(work / contract.filename).replace(work / contract.filename)
    vision = vision_parity(work, reference(preset), [[1, 4, 6], [2, 2, 4]])
    embedding = embedding_parity(work, reference(preset))
    record_parity({**vision, "embedding": max(embedding.values())})
    assert_within(vision, tolerance(precision).vision, f"bf16 vision ({preset})")
    assert_within(embedding, tolerance(precision).embedding, f"bf16 embedding ({preset})")


@cuda
@pytest.mark.cuda
@pytest.mark.parity(artifact="decoder")
@pytest.mark.parity(artifact="end_to_end")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("preset", PRESETS)
def test_cuda_through_og_matches_transformers(preset, precision, exported, reference, record_parity):
    """On a CUDA device: og with the cuda provider against transformers in the same dtype on the GPU."""
    out = exported(preset, "-p", precision, "-e", "cuda")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    ref = Reference(spec=reference(preset).spec, model=copy.deepcopy(reference(preset).model).to("cuda", dtype), processor=reference(preset).processor)
    check_generation_case(out, ref, "one_image", precision, record_parity, f"{precision} cuda {preset}")
