"""The checkpoint writer: a tiny preset, seeded random weights and the tokenizer and processor
files, written as a Hugging Face Qwen3-VL checkpoint folder is (``config.json``,
``generation_config.json``, ``model.safetensors``, ``tokenizer.json``, ``tokenizer_config.json``,
the chat template, ``preprocessor_config.json`` and ``video_preprocessor_config.json``)."""

from __future__ import annotations

import json
from pathlib import Path

from .presets import ALL_TINY_PRESETS, TinyPreset
from .templates import CHAT_TEMPLATES
from .tokenizer import QWEN3_5_SPLIT_REGEX, QWEN_SPLIT_REGEX, SPECIAL_TOKENS, hf_tokenizer


def build_config(preset: TinyPreset, vocab_size: int, token_ids: dict[str, int]):
    import transformers

    text = {**preset.text, **(preset.moe or {}), **(preset.linear or {})}
    mrope = text.pop("mrope_section")
    rope = {"rope_type": "default", "rope_theta": preset.rope_theta, "mrope_interleaved": True}
    if mrope is not None:  # None: left to transformers' default (Qwen3.5)
        rope["mrope_section"] = list(mrope)
    if "partial_rotary_factor" in text:
        rope["partial_rotary_factor"] = text.pop("partial_rotary_factor")
    text.update(
        vocab_size=vocab_size,
        hidden_act="silu",
        max_position_embeddings=262144,
        rms_norm_eps=1e-6,
        rope_parameters=rope,
        attention_bias=False,
        bos_token_id=token_ids["<|endoftext|>"],
        eos_token_id=token_ids["<|im_end|>"],
    )
    vision = dict(preset.vision)
    deepstack = list(vision.pop("deepstack_visual_indexes"))
    if preset.linear is None:  # Qwen3.5's vision config has no DeepStack at all
        vision["deepstack_visual_indexes"] = deepstack
    vision.update(
        hidden_act="gelu_pytorch_tanh",
        in_channels=3,
        patch_size=16,
        spatial_merge_size=2,
        temporal_patch_size=2,
        out_hidden_size=text["hidden_size"],
    )
    config_class = getattr(transformers, preset.hf_class.replace("ForConditionalGeneration", "Config"))
    return config_class(
        text_config=text,
        vision_config=vision,
        image_token_id=token_ids["<|image_pad|>"],
        video_token_id=token_ids["<|video_pad|>"],
        vision_start_token_id=token_ids["<|vision_start|>"],
        vision_end_token_id=token_ids["<|vision_end|>"],
        tie_word_embeddings=preset.tie_word_embeddings,
    )


def _randomize_(model, seed: int, gains: tuple[float, float] = (1.0, 1.0), router_gain: float = 1.0) -> None:
    """Give every parameter a seeded value with a scale that keeps activations O(1).

    HF's init gives tiny weights (std 0.02) and unit norms, so logits barely depend on the
    input and parity tests could pass on a model that ignores images. Larger, varied weights
    (norm gains included) make every path matter.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if param.ndim >= 2:
                # experts are stacked [E, out, in]: their fan-in is the last axis
                fan_in = param.shape[-1] if ".experts." in name else param[0].numel()
                param.copy_(torch.randn(param.shape, generator=gen, dtype=param.dtype) / fan_in**0.5)
            elif name.endswith("bias"):
                param.copy_(torch.randn(param.shape, generator=gen, dtype=param.dtype) * 0.1)
            else:  # norm gains
                param.copy_(1.0 + torch.randn(param.shape, generator=gen, dtype=param.dtype) * 0.2)
        # the token embedding is a lookup table, not a projection: unit-scale rows
        emb = model.model.language_model.embed_tokens.weight
        emb.copy_(torch.randn(emb.shape, generator=gen, dtype=emb.dtype))
        # Greedy decoding from random weights tends to repeat one token: with tied embeddings the
        # input token's own row dominates the residual stream and the logits, and after an image
        # attention's average over the many image tokens dominates. Each preset's gains on the
        # MLP output (a different function of each token) and the attention output are chosen so
        # that its greedy runs vary (the parity tests assert a minimum of distinct tokens): with
        # the gains below, 5 to 16 distinct tokens in 16 greedy steps over 16 prompts (text, one
        # to three pictures of every resize branch, multi-turn, videos), where plain weights gave
        # 1 to 3 after pictures on three of the four presets.
        for name, param in model.model.language_model.named_parameters():
            if name.endswith(("down_proj.weight", "experts.down_proj")):
                param.mul_(gains[0])
            elif name.endswith("o_proj.weight"):
                param.mul_(gains[1])
            elif name.endswith("mlp.gate.weight"):  # a MoE router
                param.mul_(router_gain)
        if model.config.tie_word_embeddings:
            emb.mul_(0.3)  # tied: a smaller table weakens the token's own row
        else:
            lm = model.lm_head.weight
            lm.copy_(torch.randn(lm.shape, generator=gen, dtype=lm.dtype) / lm.shape[1] ** 0.5)


def make_tiny_checkpoint(out_dir: str | Path, preset: str | TinyPreset = "awkward", seed: int = 0, shard_size: str = "300KB") -> Path:
    """Write a tiny random Qwen3-VL (or, for a MoE preset, Qwen3-VL-MoE) checkpoint folder;
    returns its path."""
    return write_checkpoint(out_dir, preset, seed, shard_size)


def write_checkpoint(out_dir, preset, seed: int, shard_size: str = "300KB", set_weights=None) -> Path:
    """``make_tiny_checkpoint``; ``set_weights(model, tokenizer)``, given, edits the seeded random
    weights before they are saved."""
    import torch
    import transformers

    preset = ALL_TINY_PRESETS[preset] if isinstance(preset, str) else preset
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    tokenizer = hf_tokenizer(preset.added_tokens, QWEN3_5_SPLIT_REGEX if preset.linear is not None else QWEN_SPLIT_REGEX)
    token_ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    vocab_size = len(tokenizer) + preset.extra_vocab
    config = build_config(preset, vocab_size, token_ids)

    torch.manual_seed(seed)
    dtype = torch.bfloat16 if preset.hub_layout else torch.float32
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build large checkpoints in their saved dtype: half the memory
    try:
        model = getattr(transformers, preset.hf_class)(config).eval()
    finally:
        torch.set_default_dtype(previous)
    _randomize_(model, seed, preset.gains, preset.router_gain)
    if preset.vision_gain != 1.0:
        with torch.no_grad():
            model.model.visual.merger.linear_fc2.weight.mul_(preset.vision_gain)
            model.model.visual.merger.linear_fc2.bias.mul_(preset.vision_gain)
    if set_weights is not None:
        set_weights(model, tokenizer)
    if preset.tie_word_embeddings:
        model.tie_weights()
    if preset.hub_layout:
        model.save_pretrained(out, max_shard_size=shard_size)
        _to_hub_config_layout(out / "config.json")
        if preset.moe and preset.linear is None:
            _to_hub_expert_layout(out)
        elif preset.moe:
            _stack_experts(out)
    else:
        model.save_pretrained(out)
    del model

    generation = {
        "bos_token_id": token_ids["<|endoftext|>"],
        "pad_token_id": token_ids["<|endoftext|>"],
        "do_sample": True,
        "eos_token_id": [token_ids["<|im_end|>"], token_ids["<|endoftext|>"]],
        "top_k": 20,
        "top_p": 0.8,
        "repetition_penalty": 1.0,
        "temperature": 0.7,
    }
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")

    _write_processor_files(out, tokenizer, preset)
    return out


def _to_hub_config_layout(path: Path) -> None:
    """Rewrite a transformers-5 config.json the way Qwen's hub configs are written (Qwen3-VL's:
    4.57; Qwen3.5's were written by transformers 5, and keep its layout)."""
    cfg = json.loads(path.read_text())
    if cfg["architectures"][0].startswith("Qwen3_5"):
        cfg["text_config"]["dtype"] = "bfloat16"
        path.write_text(json.dumps(cfg, indent=2) + "\n")
        return
    text = cfg["text_config"]
    rope = text.pop("rope_parameters")
    text["rope_theta"] = rope.pop("rope_theta")
    text["rope_scaling"] = rope
    text["dtype"] = "bfloat16"
    cfg.pop("dtype", None)
    cfg["vision_config"]["model_type"] = cfg["model_type"]
    cfg["vision_config"].pop("rope_parameters", None)
    cfg["transformers_version"] = "4.57.0.dev0"
    path.write_text(json.dumps(cfg, indent=2) + "\n")


def _to_hub_expert_layout(out: Path) -> None:
    """Transpose the stacked expert tensors as Qwen's hub files hold them: ``gate_up_proj``
    [E, H, 2I] and ``down_proj`` [E, I, H] (transformers 5 keeps [E, 2I, H] and [E, H, I] in memory,
    transposes on load and writes its own layout on save). One shard at a time."""
    from safetensors.torch import load_file, save_file

    for shard in sorted(out.glob("*.safetensors")):
        tensors = load_file(str(shard))
        if any(name.endswith(("experts.gate_up_proj", "experts.down_proj")) for name in tensors):
            for name in tensors:
                if name.endswith(("experts.gate_up_proj", "experts.down_proj")):
                    tensors[name] = tensors[name].transpose(1, 2).contiguous()
            save_file(tensors, str(shard), metadata={"format": "pt"})
        del tensors


def _stack_experts(out: Path) -> None:
    """Stack the one-tensor-per-expert weights transformers 5 saves for Qwen3.5-MoE
    (``mlp.experts.{j}.{gate,up,down}_proj.weight``) into the two tensors Qwen's hub files hold:
    ``mlp.experts.gate_up_proj`` [E, 2I, H] (gate rows, then up rows) and ``mlp.experts.down_proj``
    [E, H, I], each in the shard of its layer's first expert, and rewrite the shard index."""
    import re

    import torch
    from safetensors.torch import load_file, save_file

    shards = {shard.name: load_file(str(shard)) for shard in sorted(out.glob("*.safetensors"))}
    per_expert = re.compile(r"(.*\.mlp\.experts)\.(\d+)\.(gate|up|down)_proj\.weight$")
    layers: dict[str, dict[tuple[int, str], torch.Tensor]] = {}
    home: dict[str, str] = {}
    for shard, tensors in shards.items():
        for name in [n for n in tensors if per_expert.match(n)]:
            prefix, j, proj = per_expert.match(name).groups()
            layers.setdefault(prefix, {})[int(j), proj] = tensors.pop(name)
            if int(j) == 0 and proj == "gate":
                home[prefix] = shard
    for prefix, parts in layers.items():
        n = 1 + max(j for j, _ in parts)
        shards[home[prefix]][f"{prefix}.gate_up_proj"] = torch.stack([torch.cat([parts[j, "gate"], parts[j, "up"]]) for j in range(n)])
        shards[home[prefix]][f"{prefix}.down_proj"] = torch.stack([parts[j, "down"] for j in range(n)])
    for shard, tensors in shards.items():
        save_file(tensors, str(out / shard), metadata={"format": "pt"})
    index = out / "model.safetensors.index.json"
    if index.is_file():
        data = json.loads(index.read_text())
        data["weight_map"] = {name: shard for shard, tensors in sorted(shards.items()) for name in sorted(tensors)}
        index.write_text(json.dumps(data, indent=2) + "\n")


def _write_processor_files(out: Path, tokenizer, preset: TinyPreset) -> None:
    """The tokenizer and processor files, laid out as Qwen's hub checkpoints have them."""
    tokenizer.save_pretrained(out)
    tok_cfg_path = out / "tokenizer_config.json"
    tok_cfg = json.loads(tok_cfg_path.read_text())
    tok_cfg.update(tokenizer_class="Qwen2Tokenizer", errors="replace", add_prefix_space=False)
    tok_cfg.pop("backend", None)
    tok_cfg_path.write_text(json.dumps(tok_cfg, indent=2) + "\n")
    (out / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATES[preset.chat_template]}, indent=2) + "\n")
    common = {
        "patch_size": 16,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": list(preset.image_mean),
        "image_std": list(preset.image_std),
        "processor_class": "Qwen3VLProcessor",
    }
    image = {
        "size": {"longest_edge": preset.pixels[1], "shortest_edge": preset.pixels[0]},
        **common,
        "image_processor_type": "Qwen2VLImageProcessorFast",
    }
    video = {
        "size": {"longest_edge": preset.pixels[1] * 4, "shortest_edge": preset.pixels[0]},
        **common,
        "video_processor_type": "Qwen3VLVideoProcessor",
    }
    (out / "preprocessor_config.json").write_text(json.dumps(image, indent=2) + "\n")
    (out / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2) + "\n")
