"""Qwen3.5 (``Qwen3_5ForConditionalGeneration``): every artifact of the fp32 and int4 CPU exports
against transformers, greedy generation through the stock og API (text, one image, og's stock
processor on an image file, two images, a video, several turns), and what is new in the folder:
the linear-attention layers' state in the decoder graph and in genai_config.json, no DeepStack.

The presets (``testing/presets.py`` QWEN3_5_PRESETS): ``q35``, full attention first and in an
order the default rule never gives (F L L F L), heads*head_dim != hidden, linear heads of unequal
key and value widths, kernel 3, untied; ``q35_tied``, the values released configs may leave out
taken from transformers' defaults (layer types every 4th full, mrope_section [11, 11, 10] at
head_dim 256), tied, bf16 shards; ``q35_moe``, Qwen3.5-MoE (``Qwen3_5MoeForConditionalGeneration``):
6 experts top-2 on every layer beside a gated shared expert of another width, the experts stacked
as the hub holds them (and, in one test, one tensor per expert as transformers saves them).

int4 is checked as the other int4 decoders are: at accuracy level 1 its graph must equal
transformers run on the decoder's own weights dequantized.
"""

import json

import numpy as np
import onnx
import pytest
from PIL import Image

from genai_qwen3vl.model import io_contract
from genai_qwen3vl.model.spec import Qwen3VLSpec
from genai_qwen3vl.verify.artifacts import decoder_parity, embedding_parity, vision_parity
from genai_qwen3vl.verify.compare import assert_within
from genai_qwen3vl.verify.generation import og_generate

from ..conftest import QWEN3_5_PRESET_NAMES, exact_flags
from ..helpers import assert_clean_failure, check_media_case, run_cli, targets

FP32, INT4 = targets("fp32/cpu"), targets("int4/cpu")


# --------------------------------------------------------------------------- artifacts
@pytest.mark.parity(artifact="vision")
@pytest.mark.parity(artifact="embedding")
@pytest.mark.parametrize("target", FP32 + INT4)
@pytest.mark.parametrize("preset", QWEN3_5_PRESET_NAMES)
def test_qwen35_vision_and_embedding_equal_transformers(preset, target, exported, reference, target_reference, record_parity):
    out = exported(preset, *exact_flags(target))
    vision = vision_parity(out, reference(preset), [[1, 4, 6], [2, 2, 4]])
    embedding = embedding_parity(out, target_reference(preset, target))
    record_parity({**vision, **embedding})
    assert set(vision) == {"main"}, "a Qwen3.5 vision graph has no DeepStack features"
    assert_within(vision, target.tolerance.vision, f"{preset} vision")
    assert_within(embedding, target.tolerance.embedding, f"{preset} embedding")


@pytest.mark.parity(artifact="decoder")
@pytest.mark.parametrize("target", FP32 + INT4)
@pytest.mark.parametrize("preset", QWEN3_5_PRESET_NAMES)
def test_qwen35_decoder_equals_transformers(preset, target, exported, target_reference, record_parity):
    """Prefill and decode steps through the KV cache of the full-attention layers and the
    convolution and recurrent state of the linear ones, raw onnxruntime against transformers."""
    report = decoder_parity(exported(preset, *exact_flags(target)), target_reference(preset, target), seed=5, prompt_len=12, decode_steps=4)
    record_parity(report)
    assert_within(report, target.tolerance.decoder, f"{preset} {target.precision} decoder")


def _user(*parts):
    return {"role": "user", "content": list(parts)}


def _assistant(text):
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


IMAGE, VIDEO = {"type": "image"}, {"type": "video"}


def _text(s):
    return {"type": "text", "text": s}


# name -> (messages, images (h, w, seed), videos (frames, h, w, fps), og's processor: our
# Qwen3VLProcessor, or og's stock one reading an image file as og's samples do)
CASES = {
    "text": ([_user(_text("Write a short poem about the sea."))], [], [], "ours"),
    "one_image": ([_user(IMAGE, _text("Describe this image."))], [(96, 128, 1)], [], "ours"),
    "one_image_file_stock_processor": ([_user(IMAGE, _text("What is in the picture?"))], [(96, 128, 6)], [], "stock"),
    "two_images_different_sizes": ([_user(IMAGE, _text("and"), IMAGE, _text("What differs?"))], [(96, 128, 4), (64, 200, 5)], [], "ours"),
    "video": ([_user(VIDEO, _text("What happens in the video?"))], [], [(10, 64, 96, 4.0)], "ours"),
    "multi_turn": (
        [_user(IMAGE, _text("What is this?")), _assistant("A red square."), _user(_text("And its colour?"))],
        [(80, 112, 7)],
        [],
        "ours",
    ),
}


@pytest.mark.parity(artifact="end_to_end")
@pytest.mark.parametrize("target", FP32 + INT4)
@pytest.mark.parametrize("preset", QWEN3_5_PRESET_NAMES)
@pytest.mark.parametrize("case", list(CASES))
def test_qwen35_generation_through_og_equals_transformers(preset, case, target, exported, target_reference, image_file, record_parity):
    messages, image_specs, video_specs, processor = CASES[case]
    out, ref, tol = exported(preset, *exact_flags(target)), target_reference(preset, target), target.tolerance
    what = f"{preset} {target.precision}/{case}"
    check_media_case(out, ref, messages, image_specs, video_specs, processor, tol, image_file, record_parity, what)


# --------------------------------------------------------------------------- the folder
@pytest.mark.parametrize("preset", QWEN3_5_PRESET_NAMES)
def test_the_decoder_carries_the_linear_layers_state_and_genai_config_names_it(preset, exported, checkpoints):
    """KV cache only for the full-attention layers, convolution and recurrent state only for the
    linear ones (og finds both by the names genai_config.json gives), og's qwen3_5 type, no
    DeepStack: inputs_embeds and image_features are hidden_size wide."""
    spec = Qwen3VLSpec.from_checkpoint(checkpoints(preset))
    out = exported(preset)
    config = json.loads((out / "genai_config.json").read_text())["model"]
    decoder = config["decoder"]
    assert config["type"] == spec.architecture.og_model_type  # qwen3_5, or qwen3_5_moe
    assert decoder["hidden_size"] == spec.text.hidden_size
    assert decoder["inputs"]["past_conv_names"] == "past.%d.conv" and decoder["inputs"]["past_recurrent_names"] == "past.%d.recurrent"
    assert decoder["outputs"]["present_conv_names"] == "present.%d.conv"
    assert decoder["outputs"]["present_recurrent_names"] == "present.%d.recurrent"
    graph = onnx.load(str(out / io_contract.DECODER.filename), load_external_data=False).graph
    names = {v.name for v in graph.input}
    full, linear = spec.text.full_attention_layers, spec.text.linear_attention_layers
    assert full and linear and set(full) | set(linear) == set(range(spec.text.num_hidden_layers))
    assert {int(n.split(".")[1]) for n in names if n.startswith("past_key_values.")} == set(full)
    assert {int(n.split(".")[1]) for n in names if n.startswith("past.")} == set(linear)
    lin = spec.text.linear
    shapes = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.input}
    assert shapes[f"past.{linear[0]}.conv"] == ["batch_size", lin.conv_dim, lin.conv_kernel - 1]
    assert shapes[f"past.{linear[0]}.recurrent"] == ["batch_size", lin.num_value_heads, lin.key_head_dim, lin.value_head_dim]
    ops = {n.op_type for n in graph.node}
    assert {"LinearAttention", "CausalConvWithState", "GatedRMSNorm"} <= ops
    assert not any("deepstack" in n.name for n in graph.node)
    assert shapes["inputs_embeds"][-1] == spec.text.hidden_size


def test_int4_keeps_the_linear_layers_b_and_a_projections_in_float(exported):
    """og's own int4 leaves them in float (one output per value head: the update strength and the
    decay); the streaming quantizer does as og does, and quantizes the other projections."""
    graph = onnx.load(str(exported("q35", *exact_flags(INT4[0].values[0])) / "model.onnx"), load_external_data=False).graph
    by_name = {n.name: n.op_type for n in graph.node}
    assert by_name["/model/layers.1/linear_attn/b_proj/MatMul"] == "MatMul"
    assert by_name["/model/layers.1/linear_attn/a_proj/MatMul"] == "MatMul"
    assert by_name["/model/layers.1/linear_attn/qkv_proj/MatMul_Q4"] == "MatMulNBits"
    assert by_name["/model/layers.0/attn/qkv_proj/MatMul_Q4"] == "MatMulNBits"


def test_qwen35_moe_experts_are_og_moe_ops_beside_the_gated_shared_expert(exported):
    """Qwen3.5-MoE: every layer's experts are one MoE op (QMoE in int4, the experts' 4-bit blocks
    og's), the shared expert a plain MLP whose output a sigmoid gate scales into the experts' sum;
    int4 leaves the router and the shared expert's one-output gate in float."""
    for flags, experts in ((("-p", "fp32", "-e", "cpu"), "MoE"), (exact_flags(INT4[0].values[0]), "QMoE")):
        graph = onnx.load(str(exported("q35_moe", *flags) / "model.onnx"), load_external_data=False).graph
        by_name = {n.name: n.op_type for n in graph.node}
        for i in range(5):
            assert by_name[f"/model/layers.{i}/moe/{experts}"] == experts
            assert by_name[f"/model/layers.{i}/moe/GatedAdd"] == "GatedAdd"
            assert by_name[f"/model/layers.{i}/shared_expert_gate/Sigmoid"] == "Sigmoid"
            assert by_name[f"/model/layers.{i}/moe/router/MatMul"] == "MatMul"
            assert by_name[f"/model/layers.{i}/shared_expert_gate/MatMul"] == "MatMul"
        shared = f"/model/layers.0/mlp/down_proj/MatMul{'_Q4' if experts == 'QMoE' else ''}"
        assert by_name[shared] == ("MatMulNBits" if experts == "QMoE" else "MatMul")


def test_qwen35_moe_experts_saved_one_tensor_each_export_and_equal_transformers(tmp_path, record_parity):
    """The hub holds Qwen3.5-MoE's experts stacked ([E, 2I, H] and [E, H, I]); transformers 5
    saves a model it built one tensor per expert and projection. A checkpoint in that layout (a
    fine-tune saved by transformers, say) exports all the same, and its decoder equals
    transformers loading it."""
    import dataclasses

    from genai_qwen3vl.testing.checkpoint import make_tiny_checkpoint
    from genai_qwen3vl.testing.presets import QWEN3_5_PRESETS
    from genai_qwen3vl.verify.reference import Reference

    from ..conftest import SEED

    saved = make_tiny_checkpoint(tmp_path / "saved", dataclasses.replace(QWEN3_5_PRESETS["q35_moe"], hub_layout=False), seed=SEED)
    from safetensors import safe_open

    with safe_open(str(saved / "model.safetensors"), "np") as f:
        names = set(f.keys())
    assert "model.language_model.layers.0.mlp.experts.5.down_proj.weight" in names
    assert not any(n.endswith("experts.gate_up_proj") for n in names)
    out = tmp_path / "out"
    proc = run_cli("-i", saved, "-o", out, "-p", "fp32", "-e", "cpu")
    assert proc.returncode == 0, proc.stderr
    report = decoder_parity(out, Reference.load(saved), seed=5, prompt_len=12, decode_steps=2)
    record_parity(report)
    assert_within(report, FP32[0].values[0].tolerance.decoder, "q35_moe per-expert decoder")


@pytest.mark.parametrize("flags", [("-p", "fp16", "-e", "cuda"), ("-p", "int4", "-e", "cuda")])
def test_a_cuda_export_is_refused_in_one_line(flags, checkpoints, tmp_path):
    out = tmp_path / "out"
    proc = run_cli("-i", checkpoints("q35"), "-o", out, *flags)
    assert_clean_failure(proc, out, "Qwen3_5ForConditionalGeneration", "-e cpu")


@pytest.mark.parametrize(
    "preset,target",
    [("q35", FP32[0].values[0]), ("q35", INT4[0].values[0]), ("q35_moe", INT4[0].values[0])],
    ids=["q35-fp32", "q35-int4", "q35_moe-int4"],
)
def test_validate_only_on_qwen35_exports(preset, target, exported, checkpoints, capsys):
    """The export's own check (--validate_only) on a Qwen3.5 folder at og's default accuracy level:
    every graph, then og end to end, against transformers (for Qwen3.5-MoE's int4, on the QMoE
    experts and the shared expert dequantized)."""
    from genai_qwen3vl.cli import export_main

    out = exported(preset, *target.flags)
    code = export_main(["-i", str(checkpoints(preset)), "-o", str(out), "--validate_only"])
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert code == 0, text
    assert "validation passed" in text and "end to end (og)" in text


def test_the_batch_command_answers_as_og(exported, reference, image_file, tmp_path):
    """``genai-qwen3vl batch`` on a Qwen3.5 folder: each row's greedy answer (reasoning, as the
    template opens <think>, then the text) is og's through the stock API."""
    import subprocess
    import sys

    out = exported("q35")
    picture = image_file(96, 128, 3)
    table = tmp_path / "rows.jsonl"
    rows = [{"id": "text", "prompt": "Describe the sea."}, {"id": "image", "image": str(picture), "prompt": "What is this?"}]
    table.write_text("".join(json.dumps({**row, "max_tokens": 10}) + "\n" for row in rows))
    answers = tmp_path / "answers.jsonl"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "genai_qwen3vl",
            "batch",
            str(out),
            "--input",
            str(table),
            "--output",
            str(answers),
            "--temperature",
            "0",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    got = {r["id"]: r for r in map(json.loads, answers.read_text().splitlines())}
    ref = reference("q35")
    eos = set(ref.spec.tokens.eos_token_ids)
    for row in rows:
        content = ([{"type": "image"}] if "image" in row else []) + [{"type": "text", "text": row["prompt"]}]
        prompt = ref.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
        images = [Image.open(picture).convert("RGB")] if "image" in row else []
        ours = og_generate(out, prompt, [np.asarray(i) for i in images], 10, processor="ours")
        text = ref.processor.tokenizer.decode([t for t in ours.tokens if t not in eos])
        reasoning, closed, answer = text.partition("</think>")
        assert got[row["id"]]["error"] is None, got[row["id"]]
        assert (got[row["id"]]["reasoning"] or "") == reasoning
        assert (got[row["id"]]["text"] or "") == (answer.lstrip("\n") if closed else "")
