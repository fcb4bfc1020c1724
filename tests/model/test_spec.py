"""The spec parses a checkpoint exactly as transformers does, and rejects inconsistent ones."""

import json
import re
import shutil
from pathlib import Path

import pytest

from genai_qwen3vl.errors import CheckpointError
from genai_qwen3vl.model.spec import Qwen3VLSpec

from ..conftest import ALL_PRESETS, MOE_PRESET_NAMES


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_spec_equals_transformers_parsing(preset, checkpoints):
    from transformers import AutoConfig, AutoImageProcessor

    ckpt = checkpoints(preset)
    spec = Qwen3VLSpec.from_checkpoint(ckpt)
    cfg = AutoConfig.from_pretrained(ckpt)
    t, v = cfg.text_config, cfg.vision_config
    assert spec.text.hidden_size == t.hidden_size
    assert spec.text.num_hidden_layers == t.num_hidden_layers
    assert spec.text.num_attention_heads == t.num_attention_heads
    assert spec.text.num_key_value_heads == t.num_key_value_heads
    assert spec.text.head_dim == t.head_dim
    assert spec.text.vocab_size == t.vocab_size
    assert list(spec.text.mrope_section) == list(t.rope_parameters["mrope_section"])
    assert spec.text.rope_theta == t.rope_parameters["rope_theta"]
    assert spec.vision.depth == v.depth and spec.vision.hidden_size == v.hidden_size
    assert list(spec.vision.deepstack_visual_indexes) == list(v.deepstack_visual_indexes)
    assert spec.vision.num_position_embeddings == v.num_position_embeddings
    assert spec.tokens.image_token_id == cfg.image_token_id
    assert spec.tokens.video_token_id == cfg.video_token_id
    assert spec.tokens.vision_start_token_id == cfg.vision_start_token_id
    assert spec.tie_word_embeddings == cfg.tie_word_embeddings
    ip = AutoImageProcessor.from_pretrained(ckpt)
    assert (spec.image_processor.min_pixels, spec.image_processor.max_pixels) == (ip.size["shortest_edge"], ip.size["longest_edge"])
    assert list(spec.image_processor.image_mean) == list(ip.image_mean)
    assert list(spec.image_processor.image_std) == list(ip.image_std)
    assert spec.feature_width == (1 + len(v.deepstack_visual_indexes)) * t.hidden_size


def _edited(tmp_path, src, edit):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(src, ckpt)
    cfg = json.loads((ckpt / "config.json").read_text())
    edit(cfg)
    (ckpt / "config.json").write_text(json.dumps(cfg))
    return ckpt


def _rope(cfg):
    text = cfg["text_config"]
    return text.get("rope_parameters") or text["rope_scaling"]


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda c: _rope(c).update(mrope_section=[3, 3, 3]), "sum(mrope_section)"),
        (lambda c: c["vision_config"].update(deepstack_visual_indexes=[0, 9]), "deepstack_visual_indexes"),
        (lambda c: c["vision_config"].update(out_hidden_size=41), "out_hidden_size"),
        (lambda c: c.update(architectures=["Qwen2_5_VLForConditionalGeneration"]), "Qwen2_5_VLForConditionalGeneration"),
        (lambda c: c["text_config"].pop("head_dim"), "head_dim"),
        (lambda c: c["text_config"].update(num_key_value_heads=4), "num_key_value_heads"),
        (lambda c: _rope(c).update(rope_type="yarn"), "rope_type 'yarn'"),
        # types and bounds checked when parsed, each named
        (lambda c: c["text_config"].update(hidden_size="40"), "hidden_size must be a whole number, got '40' (a string)"),
        (lambda c: c["text_config"].update(num_hidden_layers=10**9), "num_hidden_layers=1000000000 must be at least 1 and at most 1024"),
        (lambda c: c["vision_config"].update(depth=True), "depth must be a whole number"),
        (lambda c: c["text_config"].update(rms_norm_eps="small"), "rms_norm_eps must be a positive number"),
        (lambda c: c.update(tie_word_embeddings="yes"), "tie_word_embeddings must be true or false"),
    ],
)
def test_inconsistent_config_is_rejected(tmp_path, checkpoints, edit, message):
    ckpt = _edited(tmp_path, checkpoints("awkward"), edit)
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Qwen3VLSpec.from_checkpoint(ckpt)


def test_unsupported_architecture_names_the_supported_ones(tmp_path, checkpoints):
    ckpt = _edited(tmp_path, checkpoints("awkward"), lambda c: c.update(architectures=["Qwen2_5_VLForConditionalGeneration"]))
    supported = (
        "supported: Qwen3VLForConditionalGeneration, Qwen3VLMoeForConditionalGeneration, "
        "Qwen3_5ForConditionalGeneration, Qwen3_5MoeForConditionalGeneration"
    )
    with pytest.raises(CheckpointError, match=f"Qwen2_5_VLForConditionalGeneration.*{supported}"):
        Qwen3VLSpec.from_checkpoint(ckpt)


@pytest.mark.parametrize("preset", MOE_PRESET_NAMES)
def test_expert_spec_equals_transformers_parsing(preset, checkpoints):
    from transformers import AutoConfig

    t = AutoConfig.from_pretrained(checkpoints(preset)).text_config
    e = Qwen3VLSpec.from_checkpoint(checkpoints(preset)).text.experts
    assert (e.num_experts, e.top_k, e.intermediate_size) == (t.num_experts, t.num_experts_per_tok, t.moe_intermediate_size)
    assert (e.decoder_sparse_step, list(e.mlp_only_layers)) == (t.decoder_sparse_step, list(t.mlp_only_layers))
    assert e.shared_intermediate_size is None


def test_qwen35_moe_expert_spec_equals_transformers_parsing(checkpoints):
    """Qwen3.5-MoE: experts on every layer (its config has no decoder_sparse_step,
    mlp_only_layers or intermediate_size), and a shared expert of its own width."""
    from transformers import AutoConfig

    t = AutoConfig.from_pretrained(checkpoints("q35_moe")).text_config
    spec = Qwen3VLSpec.from_checkpoint(checkpoints("q35_moe"))
    e = spec.text.experts
    assert (e.num_experts, e.top_k, e.intermediate_size) == (t.num_experts, t.num_experts_per_tok, t.moe_intermediate_size)
    assert e.shared_intermediate_size == t.shared_expert_intermediate_size != t.moe_intermediate_size
    assert [e.is_expert_layer(i) for i in range(t.num_hidden_layers)] == [True] * t.num_hidden_layers
    config = json.loads((checkpoints("q35_moe") / "config.json").read_text())["text_config"]
    assert not {"intermediate_size", "decoder_sparse_step", "mlp_only_layers"} & set(config)


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda c: _moe_text(c).update(shared_expert_intermediate_size=0), "shared_expert_intermediate_size=0 must be at least 1"),
        (lambda c: _moe_text(c).update(num_experts_per_tok=7), "num_experts_per_tok=7 must lie in [1, num_experts=6]"),
        (lambda c: _moe_text(c).pop("moe_intermediate_size"), "moe_intermediate_size"),
        (lambda c: _moe_text(c).pop("num_experts"), "needs text_config num_experts"),
    ],
)
def test_inconsistent_qwen35_moe_config_is_rejected(tmp_path, checkpoints, edit, message):
    ckpt = _edited(tmp_path, checkpoints("q35_moe"), edit)
    with pytest.raises(CheckpointError, match=re.escape(message)):
        Qwen3VLSpec.from_checkpoint(ckpt)


def _moe_text(c):
    return c["text_config"]


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda c: _moe_text(c).update(num_experts_per_tok=9), "num_experts_per_tok=9 must lie in [1, num_experts=8]"),
        (lambda c: _moe_text(c).update(mlp_only_layers=[4]), "mlp_only_layers [4] lie outside the 4 text layers"),
        (lambda c: _moe_text(c).update(decoder_sparse_step=0), "decoder_sparse_step=0"),
        (lambda c: _moe_text(c).pop("moe_intermediate_size"), "moe_intermediate_size"),
        (lambda c: _moe_text(c).pop("num_local_experts"), "needs text_config num_experts"),
        (lambda c: c.update(architectures=["Qwen3VLForConditionalGeneration"]), "Qwen3VLForConditionalGeneration has no experts"),
    ],
)
def test_inconsistent_expert_config_is_rejected(tmp_path, checkpoints, edit, message):
    ckpt = _edited(tmp_path, checkpoints("moe"), edit)
    with pytest.raises(CheckpointError, match=re.escape(message)):
        Qwen3VLSpec.from_checkpoint(ckpt)


def test_architectures_sharing_an_og_type_agree_on_what_the_runtime_reads():
    """The runtime finds an export's entry by genai_config's model type, where Qwen3-VL and
    Qwen3-VL-MoE both declare og's qwen3_vl: what it reads from the entry must not differ."""
    from genai_qwen3vl.model.architectures import ARCHITECTURES, architecture_of_og_type

    runtime_fields = ("image_token", "video_token", "vision_start_token", "vision_end_token", "processor_template")
    for arch in ARCHITECTURES.values():
        found = architecture_of_og_type(arch.og_model_type)
        assert [getattr(found, f) for f in runtime_fields] == [getattr(arch, f) for f in runtime_fields]
    # qwen3_vl (Qwen3-VL, Qwen3-VL-MoE), qwen3_5 (Qwen3.5) and qwen3_5_moe (Qwen3.5-MoE): og runs
    # all three as its Qwen-VL family
    assert {a.og_model_type for a in ARCHITECTURES.values()} == {"qwen3_vl", "qwen3_5", "qwen3_5_moe"}


def test_missing_files_are_named(tmp_path, checkpoints):
    with pytest.raises(CheckpointError, match="config.json is missing"):
        Qwen3VLSpec.from_checkpoint(tmp_path)
    ckpt = tmp_path / "ckpt"
    shutil.copytree(checkpoints("awkward"), ckpt)
    (ckpt / "preprocessor_config.json").unlink()
    with pytest.raises(CheckpointError, match="preprocessor_config.json"):
        Qwen3VLSpec.from_checkpoint(ckpt)


def test_transformers5_processor_layout(tmp_path, checkpoints):
    """A checkpoint saved by transformers 5 keeps the image processor in processor_config.json."""
    ckpt = tmp_path / "ckpt"
    shutil.copytree(checkpoints("awkward"), ckpt)
    image = json.loads((ckpt / "preprocessor_config.json").read_text())
    video = json.loads((ckpt / "video_preprocessor_config.json").read_text())
    (ckpt / "preprocessor_config.json").unlink()
    (ckpt / "video_preprocessor_config.json").unlink()
    (ckpt / "processor_config.json").write_text(json.dumps({"image_processor": image, "video_processor": video}))
    assert Qwen3VLSpec.from_checkpoint(ckpt) == Qwen3VLSpec.from_checkpoint(checkpoints("awkward"))


def test_marker_token_ids_come_from_the_tokenizer_when_config_lacks_them(tmp_path, checkpoints):
    """No guessed numbers: config.json's ids, else tokenizer.json's ids for the marker tokens,
    else a clear error."""
    ckpt = _edited(tmp_path, checkpoints("awkward"), lambda c: [c.pop(k) for k in ("image_token_id", "video_token_id")])
    spec = Qwen3VLSpec.from_checkpoint(ckpt)
    vocab = json.loads((ckpt / "tokenizer.json").read_text())
    added = {t["content"]: t["id"] for t in vocab["added_tokens"]}
    assert spec.tokens.image_token_id == added["<|image_pad|>"] != 151655
    assert spec.tokens.video_token_id == added["<|video_pad|>"] != 151656
    tok = json.loads((ckpt / "tokenizer.json").read_text())
    tok["added_tokens"] = [t for t in tok["added_tokens"] if t["content"] != "<|image_pad|>"]
    (ckpt / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(CheckpointError, match="no image_token_id and tokenizer.json has no <\\|image_pad\\|> token"):
        Qwen3VLSpec.from_checkpoint(ckpt)


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda p: p.pop("size"), "pixel limits"),
        (lambda p: p.pop("patch_size"), "patch_size"),
        (lambda p: p.update(size={"shortest_edge": 5000, "longest_edge": 100}), "0 < min <= max"),
    ],
)
def test_image_processor_settings_are_required_not_guessed(tmp_path, checkpoints, edit, message):
    """transformers would fall back to Qwen2-VL's pixel limits and 14-pixel patches, wrong for
    Qwen3-VL: the export refuses (the runtime processor reads the same parser, see
    tests/runtime/test_processing.py)."""
    ckpt = tmp_path / "ckpt"
    shutil.copytree(checkpoints("awkward"), ckpt)
    pre = json.loads((ckpt / "preprocessor_config.json").read_text())
    edit(pre)
    (ckpt / "preprocessor_config.json").write_text(json.dumps(pre))
    with pytest.raises(CheckpointError, match=f"preprocessor_config.json .*{message.replace('<', '.')}"):
        Qwen3VLSpec.from_checkpoint(ckpt)


def test_video_processor_settings_follow_transformers_class_values(tmp_path, checkpoints):
    """Every video key may be left out: transformers then uses Qwen3VLVideoProcessor's class
    values, which are Qwen3-VL's own; so does the spec."""
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    ckpt = tmp_path / "ckpt"
    shutil.copytree(checkpoints("awkward"), ckpt)
    (ckpt / "video_preprocessor_config.json").write_text("{}")
    video = Qwen3VLSpec.from_checkpoint(ckpt).video_processor
    cls = Qwen3VLVideoProcessor
    assert (video.min_pixels, video.max_pixels) == (cls.size["shortest_edge"], cls.size["longest_edge"])
    assert (video.patch_size, video.temporal_patch_size, video.merge_size) == (cls.patch_size, cls.temporal_patch_size, cls.merge_size)
    assert list(video.image_mean) == list(cls.image_mean) and list(video.image_std) == list(cls.image_std)


def _q35_copy(tmp_path, checkpoints, preset, edit) -> Path:
    ckpt = tmp_path / preset
    shutil.copytree(checkpoints(preset), ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    edit(config["text_config"])
    (ckpt / "config.json").write_text(json.dumps(config))
    return ckpt


def test_qwen35_values_left_out_take_transformers_defaults(checkpoints):
    """q35_tied's config leaves layer_types and mrope_section out: every 4th layer is full
    attention and the multimodal rotary sections are [11, 11, 10], as in transformers."""
    spec = Qwen3VLSpec.from_checkpoint(checkpoints("q35_tied"))
    t = spec.text
    assert t.layer_types == ("linear_attention",) * 3 + ("full_attention", "linear_attention")
    assert t.full_attention_layers == (3,) and t.linear_attention_layers == (0, 1, 2, 4)
    assert t.mrope_section == (11, 11, 10) and t.partial_rotary_factor == 0.25 and t.rotary_dim == 64
    assert spec.num_deepstack == 0 and spec.feature_width == t.hidden_size
    explicit = Qwen3VLSpec.from_checkpoint(checkpoints("q35")).text
    assert explicit.layer_types[:2] == ("full_attention", "linear_attention") and explicit.linear.conv_dim == 80


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda t: t.update(layer_types=["full_attention"] * 2), "layer_types must list"),
        (lambda t: t.update(layer_types=["sliding_attention"] * t["num_hidden_layers"]), "layer_types must list"),
        (lambda t: t.update(layer_types=["linear_attention"] * t["num_hidden_layers"]), "no full_attention layer"),
        (lambda t: t.update(linear_num_value_heads=3, linear_num_key_heads=2), "not a multiple of linear_num_key_heads"),
        (lambda t: t["rope_parameters"].update(mrope_section=[2, 2, 2]), "int(head_dim * partial_rotary_factor=0.25) // 2 = 4"),
        (lambda t: t["rope_parameters"].update(partial_rotary_factor=2), "partial_rotary_factor must lie in (0, 1]"),
    ],
)
def test_a_broken_qwen35_text_config_is_one_line(tmp_path, checkpoints, edit, words):
    with pytest.raises(CheckpointError, match=re.escape(words)):
        Qwen3VLSpec.from_checkpoint(_q35_copy(tmp_path, checkpoints, "q35", edit))
