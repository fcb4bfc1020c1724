"""One source of truth for a checkpoint's dimensions.

``Qwen3VLSpec.from_checkpoint(dir)`` reads ``config.json``, the image/video processor
configs and ``generation_config.json`` once, checks the invariants the export relies on,
and every later stage reads its numbers from here.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from .architectures import Architecture, architecture
from .processor_settings import FrameSampling, PixelSettings, image_settings, video_settings


@dataclasses.dataclass(frozen=True)
class ExpertSpec:
    """The mixture-of-experts part of a Qwen3-VL-MoE text config. A text layer ``i`` routes
    through experts when ``i`` is not in ``mlp_only_layers`` and ``(i + 1) % decoder_sparse_step
    == 0`` (transformers' rule); the others have a dense MLP of ``TextSpec.intermediate_size``."""

    num_experts: int
    top_k: int  # num_experts_per_tok
    intermediate_size: int  # moe_intermediate_size: each expert's width
    decoder_sparse_step: int
    mlp_only_layers: tuple[int, ...]

    def is_expert_layer(self, layer: int) -> bool:
        return layer not in self.mlp_only_layers and (layer + 1) % self.decoder_sparse_step == 0

    def expert_layers(self, num_layers: int) -> tuple[int, ...]:
        return tuple(i for i in range(num_layers) if self.is_expert_layer(i))


@dataclasses.dataclass(frozen=True)
class TextSpec:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    rms_norm_eps: float
    rope_theta: float
    mrope_section: tuple[int, ...]
    mrope_interleaved: bool
    max_position_embeddings: int
    experts: ExpertSpec | None = None  # Qwen3-VL-MoE; None for dense Qwen3-VL


@dataclasses.dataclass(frozen=True)
class VisionSpec:
    depth: int
    hidden_size: int
    num_heads: int
    intermediate_size: int
    in_channels: int
    patch_size: int
    temporal_patch_size: int
    spatial_merge_size: int
    out_hidden_size: int
    num_position_embeddings: int
    deepstack_visual_indexes: tuple[int, ...]

    @property
    def patch_dim(self) -> int:
        """Width of one row of ``pixel_values``."""
        return self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size


@dataclasses.dataclass(frozen=True)
class TokenSpec:
    image_token_id: int
    video_token_id: int
    vision_start_token_id: int
    vision_end_token_id: int
    bos_token_id: int | None
    pad_token_id: int | None
    eos_token_ids: tuple[int, ...]
    # og's tool-call / reasoning markers (bot/eot/bor/eor_token_id), where the tokenizer has them
    markers: tuple[tuple[str, int], ...] = ()


# og's genai_config keys for tool-call and reasoning markers, and the tokens that fill them
MARKER_TOKENS = {
    "bot_token_id": ("<tool_call>", "<|tool_call|>"),
    "eot_token_id": ("</tool_call>", "<|/tool_call|>"),
    "bor_token_id": ("<think>",),
    "eor_token_id": ("</think>",),
}


@dataclasses.dataclass(frozen=True)
class Qwen3VLSpec:
    arch: Architecture
    text: TextSpec
    vision: VisionSpec
    image_processor: PixelSettings
    video_processor: PixelSettings
    frame_sampling: FrameSampling
    tokens: TokenSpec
    tie_word_embeddings: bool
    generation: dict[str, Any]

    @property
    def architecture(self) -> str:
        return self.arch.hf_class

    @property
    def og_model_type(self) -> str:
        return self.arch.og_model_type

    @property
    def num_deepstack(self) -> int:
        """K: how many DeepStack feature sets the vision tower emits."""
        return len(self.vision.deepstack_visual_indexes)

    @property
    def feature_width(self) -> int:
        """(1+K)*H: width of ``image_features`` and ``inputs_embeds`` between our graphs."""
        return (1 + self.num_deepstack) * self.text.hidden_size

    def __post_init__(self) -> None:
        t, v = self.text, self.vision
        problems = []
        if sum(t.mrope_section) != t.head_dim // 2:
            problems.append(f"sum(mrope_section)={sum(t.mrope_section)} != head_dim // 2 = {t.head_dim // 2}")
        if len(t.mrope_section) != 3:
            problems.append(f"mrope_section must have 3 entries (t, h, w), got {list(t.mrope_section)}")
        if t.num_attention_heads % t.num_key_value_heads:
            problems.append(
                f"num_attention_heads={t.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={t.num_key_value_heads}"
            )
        ds = v.deepstack_visual_indexes
        if any(i < 0 or i >= v.depth for i in ds):
            problems.append(f"deepstack_visual_indexes {list(ds)} must lie in [0, vision depth={v.depth})")
        if len(set(ds)) != len(ds):
            problems.append(f"deepstack_visual_indexes {list(ds)} has repeats")
        if len(ds) > t.num_hidden_layers:
            problems.append(f"{len(ds)} deepstack feature sets but only {t.num_hidden_layers} text layers to take them")
        if v.out_hidden_size != t.hidden_size:
            problems.append(f"vision out_hidden_size={v.out_hidden_size} != text hidden_size={t.hidden_size}")
        if v.hidden_size % v.num_heads:
            problems.append(f"vision hidden_size={v.hidden_size} is not a multiple of num_heads={v.num_heads}")
        if int(v.num_position_embeddings**0.5) ** 2 != v.num_position_embeddings:
            problems.append(f"vision num_position_embeddings={v.num_position_embeddings} is not a square")
        for kind, p in (("image", self.image_processor), ("video", self.video_processor)):
            for name in ("patch_size", "temporal_patch_size"):
                if getattr(p, name) != getattr(v, name):
                    problems.append(f"{kind} processor {name}={getattr(p, name)} != vision config {name}={getattr(v, name)}")
            if p.merge_size != v.spatial_merge_size:
                problems.append(f"{kind} processor merge_size={p.merge_size} != vision spatial_merge_size={v.spatial_merge_size}")
        problems += _expert_problems(self.arch, t)
        if problems:
            raise CheckpointError("the checkpoint's configuration is inconsistent: " + "; ".join(problems))

    # ------------------------------------------------------------------ parsing
    @classmethod
    def from_checkpoint(cls, checkpoint_dir: str | Path) -> "Qwen3VLSpec":
        root = Path(checkpoint_dir)
        config = _read_json(root / "config.json", required=True)
        architectures = config.get("architectures") or []
        name = architectures[0] if architectures else f"<none; model_type={config.get('model_type')!r}>"
        arch = architecture(name, str(root / "config.json"))
        text_cfg = config.get("text_config") or {}
        vision_cfg = config.get("vision_config") or {}
        if not text_cfg or not vision_cfg:
            raise CheckpointError(f"{root / 'config.json'} has no text_config/vision_config section")

        text = _text_spec(text_cfg, config)
        vision = _vision_spec(vision_cfg)
        image_cfg, image_path = image_processor_config(root)
        video_cfg = video_processor_config(root)
        try:
            image_proc = image_settings(image_cfg)
        except ValueError as exc:
            raise CheckpointError(f"{image_path} {exc}") from None
        try:
            video_proc = video_settings(video_cfg)
        except ValueError as exc:
            raise CheckpointError(f"{root}: the video processor settings {exc}") from None
        generation = _read_json(root / "generation_config.json") or {}
        tokens = _token_spec(arch, config, text_cfg, generation, _tokenizer_vocab(root))
        tie = config.get("tie_word_embeddings", text_cfg.get("tie_word_embeddings", False))
        return cls(
            arch=arch,
            text=text,
            vision=vision,
            image_processor=image_proc,
            video_processor=video_proc,
            frame_sampling=FrameSampling.from_config(video_cfg),
            tokens=tokens,
            tie_word_embeddings=bool(tie),
            generation=generation,
        )


def _read_json(path: Path, required: bool = False) -> dict | None:
    if not path.is_file():
        if required:
            raise CheckpointError(f"{path} is missing: point -i at a Hugging Face Qwen3-VL checkpoint folder")
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); re-download the checkpoint") from None


def _need(cfg: dict, key: str, where: str):
    if key not in cfg or cfg[key] is None:
        raise CheckpointError(f"config.json {where} has no {key!r}")
    return cfg[key]


def _text_spec(t: dict, top: dict) -> TextSpec:
    rope = t.get("rope_parameters") or t.get("rope_scaling") or {}
    theta = rope.get("rope_theta", t.get("rope_theta", top.get("rope_theta")))
    if theta is None:
        raise CheckpointError("config.json text_config has no rope_theta (in rope_parameters or at top level)")
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise CheckpointError(
            f"config.json text_config uses rope_type {rope_type!r}; only Qwen3-VL's 'default' MRoPE is supported"
        )
    section = rope.get("mrope_section")
    if not section:
        raise CheckpointError("config.json text_config has no mrope_section: not a Qwen3-VL text config")
    heads = _need(t, "num_attention_heads", "text_config")
    return TextSpec(
        hidden_size=_need(t, "hidden_size", "text_config"),
        num_hidden_layers=_need(t, "num_hidden_layers", "text_config"),
        num_attention_heads=heads,
        num_key_value_heads=t.get("num_key_value_heads") or heads,
        head_dim=_need(t, "head_dim", "text_config"),
        intermediate_size=_need(t, "intermediate_size", "text_config"),
        vocab_size=_need(t, "vocab_size", "text_config"),
        rms_norm_eps=float(t.get("rms_norm_eps", 1e-6)),
        rope_theta=float(theta),
        mrope_section=tuple(int(x) for x in section),
        mrope_interleaved=bool(rope.get("mrope_interleaved", True)),
        max_position_embeddings=int(t.get("max_position_embeddings", 262144)),
        experts=expert_spec(t),
    )


def expert_spec(t: dict) -> ExpertSpec | None:
    """The expert part of a text config (transformers' keys), or None for a dense one."""
    experts = t.get("num_experts", t.get("num_local_experts"))
    if experts is None:
        return None
    only = t.get("mlp_only_layers") or []
    if not isinstance(only, (list, tuple)):
        raise CheckpointError(f"config.json text_config mlp_only_layers must be a list of layer numbers, got {only!r}")
    return ExpertSpec(
        num_experts=int(experts),
        top_k=int(_need(t, "num_experts_per_tok", "text_config")),
        intermediate_size=int(_need(t, "moe_intermediate_size", "text_config")),
        decoder_sparse_step=int(t.get("decoder_sparse_step", 1)),
        mlp_only_layers=tuple(int(i) for i in only),
    )


def _expert_problems(arch: Architecture, t: TextSpec) -> list[str]:
    e = t.experts
    if arch.experts is None:
        return [f"{arch.hf_class} has no experts, but text_config sets num_experts={e.num_experts}"] if e else []
    if e is None:
        return [f"{arch.hf_class} needs text_config num_experts (or num_local_experts), num_experts_per_tok and moe_intermediate_size"]
    problems = []
    if e.num_experts < 1:
        problems.append(f"num_experts={e.num_experts} must be at least 1")
    if not 1 <= e.top_k <= e.num_experts:
        problems.append(f"num_experts_per_tok={e.top_k} must lie in [1, num_experts={e.num_experts}]")
    if e.intermediate_size < 1:
        problems.append(f"moe_intermediate_size={e.intermediate_size} must be at least 1")
    if e.decoder_sparse_step < 1:
        problems.append(f"decoder_sparse_step={e.decoder_sparse_step} must be at least 1")
    outside = [i for i in e.mlp_only_layers if not 0 <= i < t.num_hidden_layers]
    if outside:
        problems.append(f"mlp_only_layers {outside} lie outside the {t.num_hidden_layers} text layers")
    return problems


def _vision_spec(v: dict) -> VisionSpec:
    return VisionSpec(
        depth=_need(v, "depth", "vision_config"),
        hidden_size=_need(v, "hidden_size", "vision_config"),
        num_heads=_need(v, "num_heads", "vision_config"),
        intermediate_size=_need(v, "intermediate_size", "vision_config"),
        in_channels=v.get("in_channels", 3),
        patch_size=v.get("patch_size", 16),
        temporal_patch_size=v.get("temporal_patch_size", 2),
        spatial_merge_size=v.get("spatial_merge_size", 2),
        out_hidden_size=_need(v, "out_hidden_size", "vision_config"),
        num_position_embeddings=_need(v, "num_position_embeddings", "vision_config"),
        deepstack_visual_indexes=tuple(int(i) for i in v.get("deepstack_visual_indexes", ())),
    )


def image_processor_config(root: Path) -> tuple[dict, Path]:
    """The image processor's settings and the file they came from: ``preprocessor_config.json``
    (hub layout) or the ``image_processor`` section of a transformers-5 ``processor_config.json``."""
    legacy = _read_json(root / "preprocessor_config.json")
    if legacy is not None:
        return legacy, root / "preprocessor_config.json"
    combined = _read_json(root / "processor_config.json")
    if combined and isinstance(combined.get("image_processor"), dict):
        return combined["image_processor"], root / "processor_config.json"
    raise CheckpointError(
        f"{root} has no preprocessor_config.json (nor processor_config.json with an image_processor section); "
        "copy it from the original checkpoint"
    )


def video_processor_config(root: Path) -> dict:
    legacy = _read_json(root / "video_preprocessor_config.json")
    if legacy is not None:
        return legacy
    combined = _read_json(root / "processor_config.json") or {}
    return combined.get("video_processor") or {}


def _as_id_list(value) -> list[int]:
    if value is None:
        return []
    return [int(x) for x in value] if isinstance(value, (list, tuple)) else [int(value)]


def _tokenizer_vocab(root: Path) -> dict[str, int]:
    """token -> id for the added tokens and the BPE vocabulary of tokenizer.json."""
    tok = _read_json(root / "tokenizer.json") or {}
    vocab = dict((tok.get("model") or {}).get("vocab") or {})
    for added in tok.get("added_tokens") or []:
        vocab[added["content"]] = added["id"]
    return vocab


def _token_spec(arch: Architecture, top: dict, text: dict, generation: dict, vocab: dict[str, int]) -> TokenSpec:
    def first(*values):
        return next((v for v in values if v is not None), None)

    def marker(key: str, token: str) -> int:
        """config.json's id, else the tokenizer's id for the token; never a guessed number."""
        value = first(top.get(key), vocab.get(token))
        if value is None:
            raise CheckpointError(
                f"config.json has no {key} and tokenizer.json has no {token} token; copy both from the original checkpoint"
            )
        return int(value)

    eos: list[int] = []
    for source in (generation.get("eos_token_id"), text.get("eos_token_id"), top.get("eos_token_id")):
        for token in _as_id_list(source):
            if token not in eos:
                eos.append(token)
    if not eos:
        raise CheckpointError("no eos_token_id in generation_config.json or config.json")
    return TokenSpec(
        image_token_id=marker("image_token_id", arch.image_token),
        video_token_id=marker("video_token_id", arch.video_token),
        vision_start_token_id=marker("vision_start_token_id", arch.vision_start_token),
        vision_end_token_id=marker("vision_end_token_id", arch.vision_end_token),
        bos_token_id=first(generation.get("bos_token_id"), text.get("bos_token_id"), top.get("bos_token_id")),
        pad_token_id=first(generation.get("pad_token_id"), text.get("pad_token_id"), top.get("pad_token_id")),
        eos_token_ids=tuple(eos),
        markers=_markers(vocab),
    )


def _markers(vocab: dict[str, int]) -> tuple[tuple[str, int], ...]:
    found = []
    for key, candidates in MARKER_TOKENS.items():
        token = next((c for c in candidates if c in vocab), None)
        if token is not None:
            found.append((key, int(vocab[token])))
    return tuple(found)
