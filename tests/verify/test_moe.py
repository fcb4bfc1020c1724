"""Qwen3-VL-MoE (``Qwen3VLMoeForConditionalGeneration``): every artifact of the fp32 and int4 CPU
exports against transformers, greedy generation through the stock og API, the router at the
edges where a routing error would show, and the expert layers' graph.

The presets (``testing/tiny.py`` MOE_PRESETS): ``moe``, 8 experts top-2 with one dense layer
among three expert layers, widths that are no multiple of the QMoE block, untied; ``moe_hub``,
6 experts top-3 on every second layer (decoder_sparse_step 2) plus mlp_only_layers, tied, bf16
shards with the expert tensors transposed as the hub files hold them. DeepStack (K=2 at
non-adjacent vision blocks; K=3) feeds both dense and expert layers.

int4 is checked as the dense int4 decoders are: at accuracy level 1 its graph must equal
transformers run on the decoder's own weights dequantized (MatMulNBits and QMoE experts).
"""

import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper

from genai_qwen3vl.model import io_contract
from genai_qwen3vl.model.spec import Qwen3VLSpec
from genai_qwen3vl.onnx_format import read_initializers
from genai_qwen3vl.verify.artifacts import decoder_parity, embedding_parity, vision_parity
from genai_qwen3vl.verify.compare import assert_within
from genai_qwen3vl.verify.reference import qmoe_weights

from ..conftest import INT4_EXACT, MOE_PRESET_NAMES, exact_flags
from ..helpers import assert_clean_failure, check_media_case, run_cli, targets

FP32, INT4 = targets("fp32/cpu"), targets("int4/cpu")


# --------------------------------------------------------------------------- artifacts
@pytest.mark.parity(artifact="vision")
@pytest.mark.parity(artifact="embedding")
@pytest.mark.parametrize("target", FP32 + INT4)
@pytest.mark.parametrize("preset", MOE_PRESET_NAMES)
def test_moe_vision_and_embedding_equal_transformers(preset, target, exported, reference, target_reference, record_parity):
    """Vision against transformers' own weights; the embedding against transformers' embedding
    on the table as exported (int4: the 4-bit table, dequantized)."""
    out = exported(preset, *exact_flags(target))
    vision = vision_parity(out, reference(preset), [[1, 4, 6], [2, 2, 4]])
    embedding = embedding_parity(out, target_reference(preset, target))
    record_parity({**vision, **embedding})
    assert_within(vision, target.tolerance.vision, f"{preset} vision")
    assert_within(embedding, target.tolerance.embedding, f"{preset} embedding")


@pytest.mark.parity(artifact="decoder")
@pytest.mark.parametrize("target", FP32 + INT4)
@pytest.mark.parametrize("preset", MOE_PRESET_NAMES)
def test_moe_decoder_equals_transformers(preset, target, exported, target_reference, record_parity):
    report = decoder_parity(exported(preset, *exact_flags(target)), target_reference(preset, target), seed=5, prompt_len=12, decode_steps=3)
    record_parity(report)
    assert_within(report, target.tolerance.decoder, f"{preset} {target.precision} decoder")


def _user(*parts):
    return [{"role": "user", "content": list(parts)}]


IMAGE, VIDEO = {"type": "image"}, {"type": "video"}


def _text(s):
    return {"type": "text", "text": s}


# name -> (messages, images (h, w, seed), videos (frames, h, w, fps), og's processor: our
# Qwen3VLProcessor, or og's stock one reading an image file as og's samples do)
CASES = {
    "text": (_user(_text("Write a short poem about the sea.")), [], [], "ours"),
    "one_image": (_user(IMAGE, _text("Describe this image.")), [(96, 128, 1)], [], "ours"),
    "one_image_file_stock_processor": (_user(IMAGE, _text("What is in the picture?")), [(96, 128, 6)], [], "stock"),
    "two_images_different_sizes": (_user(IMAGE, _text("and"), IMAGE, _text("What differs?")), [(96, 128, 4), (64, 200, 5)], [], "ours"),
    "video": (_user(VIDEO, _text("What happens in the video?")), [], [(10, 64, 96, 4.0)], "ours"),
}


@pytest.mark.parity(artifact="end_to_end")
@pytest.mark.parametrize("target", FP32 + INT4)
@pytest.mark.parametrize("preset", MOE_PRESET_NAMES)
@pytest.mark.parametrize("case", list(CASES))
def test_moe_generation_through_og_equals_transformers(preset, case, target, exported, target_reference, image_file, record_parity):
    messages, image_specs, video_specs, processor = CASES[case]
    out, ref, tol = exported(preset, *exact_flags(target)), target_reference(preset, target), target.tolerance
    what = f"{preset} {target.precision}/{case}"
    check_media_case(out, ref, messages, image_specs, video_specs, processor, tol, image_file, record_parity, what)


# --------------------------------------------------------------------------- the router
def _expert_node(model: onnx.ModelProto, layer: int) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name in (f"/model/layers.{layer}/moe/MoE", f"/model/layers.{layer}/moe/QMoE"))


def _layer_session(out, layer: int, router: np.ndarray) -> ort.InferenceSession:
    """The exported expert op of ``layer`` (its attributes and expert weights as exported), fed by
    a router MatMul with the weight ``router`` [E, H], as og's graph wires it: raw logits in."""
    model = onnx.load(str(out / io_contract.DECODER.filename), load_external_data=False)
    node = copy.deepcopy(_expert_node(model, layer))
    weights = read_initializers(model, out, [name for name in node.input[2:] if name])
    node.input[0], node.input[1] = "x", "logits"
    node.output[:] = ["y"]
    inits = [onnx.numpy_helper.from_array(np.ascontiguousarray(a), name) for name, a in weights.items()]
    inits.append(onnx.numpy_helper.from_array(np.ascontiguousarray(router.T.astype(np.float32)), "router"))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "router"], ["logits"], name="router"), node],
        "expert_layer",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, router.shape[1]])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, router.shape[1]])],
        inits,
    )
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(helper.make_model(graph, opset_imports=opsets).SerializeToString(), options)


def _router_for(x: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """A router weight W [E, H] with x @ W.T == logits (x has fewer rows than columns)."""
    return (np.linalg.pinv(x.astype(np.float64)) @ logits.astype(np.float64)).T


def _routing_cases(tokens: int, experts: int, k: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    near_tie = rng.normal(0.0, 2.0, (tokens, experts))
    for row in near_tie:  # the k-th and (k+1)-th experts 2e-4 apart: the choice hangs on them
        order = np.argsort(-row)
        row[order[k]] = row[order[k - 1]] - 2e-4
    # nearly flat logits: the top k hold little of the softmax, so renormalised weights are
    # several times the raw ones
    flat = rng.normal(0.0, 0.05, (tokens, experts))
    return {"near_tie": near_tie, "flat": flat}


def _hf_block(ref, layer: int, router: np.ndarray):
    block = copy.deepcopy(ref.model.model.language_model.layers[layer].mlp)
    with torch.no_grad():
        block.gate.weight.copy_(torch.from_numpy(router).float())
    return block


@pytest.mark.parametrize("target", FP32 + INT4)
@pytest.mark.parametrize("preset", MOE_PRESET_NAMES)
def test_routing_at_near_ties_and_renormalisation_equals_transformers(preset, target, exported, target_reference, record_parity):
    """Softmax over all experts, top-k, renormalised, on router logits chosen so that a routing
    error cannot hide: the k-th and (k+1)-th experts 2e-4 apart for every token, and logits so flat
    that renormalising multiplies the weights several times. The test also shows each case is
    sensitive: moving the tie the other way, or not renormalising, changes the output far beyond
    the tolerance."""
    out = exported(preset, *exact_flags(target))
    ref = target_reference(preset, target)
    spec = ref.spec
    e = spec.text.experts
    layer = e.expert_layers(spec.text.num_hidden_layers)[0]
    tokens = min(7, spec.text.hidden_size - 1)
    x = np.random.default_rng(3).normal(0.0, 1.0, (tokens, spec.text.hidden_size)).astype(np.float32)
    bound = target.tolerance.decoder
    report = {}
    for name, logits in _routing_cases(tokens, e.num_experts, e.top_k, seed=11).items():
        router = _router_for(x, logits)
        ours = _layer_session(out, layer, router).run(["y"], {"x": x})[0]
        block = _hf_block(ref, layer, router)
        with torch.no_grad():
            theirs = block(torch.from_numpy(x)[None])[0].numpy()
        report[name] = float(np.abs(ours - theirs).max())
        probs = torch.softmax(torch.from_numpy(x) @ block.gate.weight.detach().T, dim=-1)
        top = torch.topk(probs, e.top_k + 1, dim=-1).values
        if name == "near_tie":
            assert float((top[:, -2] - top[:, -1]).max() / top[:, -1].min()) < 1e-3, "the case lost its near tie"
            # the choice flipped: the (k+1)-th expert instead of the k-th, for every token
            flipped = logits.copy()
            for row in flipped:
                order = np.argsort(-row)
                row[order[e.top_k - 1]], row[order[e.top_k]] = row[order[e.top_k]] - 1e-4, row[order[e.top_k - 1]]
            with torch.no_grad():
                other = _hf_block(ref, layer, _router_for(x, flipped))(torch.from_numpy(x)[None])[0].numpy()
            assert np.abs(other - theirs).max() > 100 * bound.limit(np.abs(theirs).max())
        else:
            kept = top[:, :-1].sum(-1)
            assert float(kept.max()) < 0.7, f"top-{e.top_k} of {e.num_experts} hold {float(kept.max()):.2f} of the softmax"
            raw = theirs * kept.numpy()[:, None]  # what un-renormalised weights would give
            assert np.abs(raw - theirs).max() > 100 * bound.limit(np.abs(theirs).max())
    record_parity(report)
    assert_within(report, bound, f"{preset} {target.precision} expert layer {layer} routing")


# --------------------------------------------------------------------------- the graph
@pytest.mark.parametrize("preset", MOE_PRESET_NAMES)
def test_expert_layers_of_the_graph(preset, exported, checkpoints):
    """fp32: an MoE op on every expert layer and og's dense MLP on the others; int4: 4-bit QMoE
    experts at og's CPU accuracy level, a float router, every other MatMul int4; DeepStack intact."""
    from transformers import AutoConfig

    spec = Qwen3VLSpec.from_checkpoint(checkpoints(preset))
    layers, e = spec.text.num_hidden_layers, spec.text.experts
    hf = AutoConfig.from_pretrained(checkpoints(preset)).text_config
    expected = tuple(
        i for i in range(layers) if i not in hf.mlp_only_layers and hf.num_experts > 0 and (i + 1) % hf.decoder_sparse_step == 0
    )  # transformers' rule (Qwen3VLMoeTextDecoderLayer)
    assert e.expert_layers(layers) == expected and 0 < len(expected) < layers
    for flags, op in (((), "MoE"), (("-p", "int4", "-e", "cpu"), "QMoE")):
        out = exported(preset, *flags)
        model = onnx.load(str(out / "model.onnx"), load_external_data=False)
        names = {n.name: n for n in model.graph.node}
        assert sorted(n.name for n in model.graph.node if n.op_type in ("MoE", "QMoE")) == sorted(
            f"/model/layers.{i}/moe/{op}" for i in expected
        )
        for i in range(layers):
            dense = f"/model/layers.{i}/mlp/down_proj/MatMul" + ("_Q4" if op == "QMoE" else "")
            assert (dense in names) == (i not in expected), (i, dense)
        for i in expected:
            attrs = {a.name: helper.get_attribute_value(a) for a in names[f"/model/layers.{i}/moe/{op}"].attribute}
            assert attrs["k"] == e.top_k and attrs["normalize_routing_weights"] == 1 and attrs["swiglu_fusion"] == 1
            assert attrs["activation_type"] == b"swiglu" and attrs["activation_alpha"] == 1.0 and attrs["activation_beta"] == 0.0
            assert names[f"/model/layers.{i}/moe/router/MatMul"].op_type == "MatMul"
            if op == "QMoE":
                assert (attrs["expert_weight_bits"], attrs["block_size"], attrs["accuracy_level"]) == (4, 32, 4)
        if op == "QMoE":
            assert [n.name for n in model.graph.node if n.op_type == "MatMul"] == [f"/model/layers.{i}/moe/router/MatMul" for i in expected]
        adds = [n.name for n in model.graph.node if n.name.endswith("/deepstack/Add")]
        assert adds == [f"/model/layers.{k}/deepstack/Add" for k in range(spec.num_deepstack)]


def test_qmoe_dequantization_reads_the_exported_experts(exported, reference):
    """The int4 check's reference holds what the QMoE weights encode: within int4's error of the
    checkpoint's experts, which transformers keeps in [gate | up] order (og interleaves them)."""
    ref = reference("moe_hub")
    experts = qmoe_weights(exported("moe_hub", "-p", "int4", "-e", "cpu", *INT4_EXACT) / "model.onnx")
    layout = ref.spec.architecture.experts
    params = dict(ref.model.named_parameters())
    assert sorted(experts) == list(ref.spec.text.experts.expert_layers(ref.spec.text.num_hidden_layers))
    for i, tensors in experts.items():
        for proj, name in (("gate_up", layout.hf_gate_up), ("down", layout.hf_down)):
            w = params[name.format(i=i)].detach().numpy()
            assert tensors[proj].shape == w.shape
            rel = np.sqrt(((tensors[proj] - w) ** 2).mean() / (w**2).mean())
            assert 0.01 < rel < 0.15, (i, proj, rel)  # 4-bit blocks of 32: about 0.09


# --------------------------------------------------------------------------- lean loading
def test_builder_reads_no_experts_while_building(checkpoints):
    """The builder's model holds every text tensor but the experts, which stay on the meta device
    (og's saver reads them layer by layer from the files); the vision tower is not loaded."""
    from genai_qwen3vl.export.moe import CheckpointTensors
    from genai_qwen3vl.model.architectures import QWEN3_VL_MOE

    for preset in MOE_PRESET_NAMES:
        spec = Qwen3VLSpec.from_checkpoint(checkpoints(preset))
        tensors = CheckpointTensors(checkpoints(preset), QWEN3_VL_MOE.experts)
        model = tensors.model_without_experts(QWEN3_VL_MOE)
        on_meta = {name for name, p in model.named_parameters() if p.is_meta}
        text = {name for name in on_meta if not name.startswith("model.visual.")}
        embedding = "model.language_model.embed_tokens.weight"
        assert (embedding in text) != spec.tie_word_embeddings  # the decoder takes inputs_embeds
        text.discard(embedding)
        assert text and all(".mlp.experts." in name for name in text), sorted(text)[:4]
        loaded = {name for name, p in model.named_parameters() if not p.is_meta}
        assert any(name.endswith("mlp.gate.weight") for name in loaded) and "model.language_model.norm.weight" in loaded
        for i in spec.text.experts.expert_layers(spec.text.num_hidden_layers):
            gate_up = tensors.experts(i, "gate_up")
            assert tuple(gate_up.shape) == (spec.text.experts.num_experts, 2 * spec.text.experts.intermediate_size, spec.text.hidden_size)


# --------------------------------------------------------------------------- refusals
def test_expert_tensors_that_do_not_fit_the_config_are_refused_before_export(checkpoints, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    ckpt = tmp_path / "ckpt"
    shutil.copytree(checkpoints("moe"), ckpt)
    shard = ckpt / "model.safetensors"
    tensors = load_file(str(shard))
    name = "model.language_model.layers.1.mlp.experts.down_proj"
    tensors[name] = tensors[name][:, :, :-1].contiguous()
    save_file(tensors, str(shard), metadata={"format": "pt"})
    out = tmp_path / "out"
    proc = run_cli("-i", ckpt, "-o", out, "-p", "fp32", "-e", "cpu")
    assert_clean_failure(proc, out, name, "has shape [8, 48, 39] where config.json asks for [8, 48, 40]")


def test_qmoe_block_sizes_are_checked(checkpoints, tmp_path):
    out = tmp_path / "out"
    proc = run_cli("-i", checkpoints("moe"), "-o", out, "-p", "int4", "-e", "cpu", "--int4_block_size", "16")
    assert_clean_failure(proc, out, "--int4_block_size 16", "QMoE", "32, 64, 128")


# --------------------------------------------------------------------------- --validate_only
@pytest.mark.parametrize("target", targets("int4/cpu", "fp16/cuda", "int4/cuda"))
def test_validate_only_on_moe_exports(target, exported, checkpoints, capsys, record_parity):
    """The export's own check on a MoE folder: int4 at og's default accuracy level (validation sets
    the QMoE experts to level 1 as well as the MatMulNBits), fp16 and CUDA int4 (run on this CPU)
    against transformers fp32, whose fp16 expert layers round more than onnxruntime's. CUDA int4
    experts ship as raw 4-bit blocks (weights_prepacked=0) that onnxruntime lays out for the GPU
    when it loads them."""
    from genai_qwen3vl.cli import export_main

    out = exported("moe_hub", *target.flags)
    model = onnx.load(str(out / "model.onnx"), load_external_data=False)
    for node in model.graph.node:
        if node.op_type == "QMoE":
            attrs = {a.name: a.i for a in node.attribute}
            assert attrs.get("weights_prepacked", 0) == 0 and attrs["block_size"] == 32
    code = export_main(["-i", str(checkpoints("moe_hub")), "-o", str(out), "--validate_only"])
    captured = capsys.readouterr()
    summary = next(line for line in (captured.out + captured.err).splitlines() if line.startswith("validation "))
    record_parity(f"moe_hub {target.precision}/{target.provider}: {summary}")
    assert code == 0, captured.out + captured.err
    assert "validation passed: 21 checks within tolerance" in captured.out
