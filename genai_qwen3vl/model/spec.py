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
    """The mixture-of-experts part of a Qwen3-VL-MoE or Qwen3.5-MoE text config. A text layer ``i``
    routes through experts when ``i`` is not in ``mlp_only_layers`` and ``(i + 1) %
    decoder_sparse_step == 0`` (transformers' rule; Qwen3.5-MoE has neither key: every layer); the
    others have a dense MLP of ``TextSpec.intermediate_size``."""

    num_experts: int
    top_k: int  # num_experts_per_tok
    intermediate_size: int  # moe_intermediate_size: each expert's width
    decoder_sparse_step: int
    mlp_only_layers: tuple[int, ...]
    # Qwen3.5-MoE: the always-active shared expert's width (shared_expert_intermediate_size);
    # None: no shared expert (Qwen3-VL-MoE)
    shared_intermediate_size: int | None = None

    def is_expert_layer(self, layer: int) -> bool:
        return layer not in self.mlp_only_layers and (layer + 1) % self.decoder_sparse_step == 0

    def expert_layers(self, num_layers: int) -> tuple[int, ...]:
        return tuple(i for i in range(num_layers) if self.is_expert_layer(i))


@dataclasses.dataclass(frozen=True)
class LinearAttentionSpec:
    """Qwen3.5's linear-attention layers (gated delta rule): their heads, the depthwise causal
    convolution over [q | k | v] and the state og carries for them between steps
    (``past.{i}.conv`` [B, conv_dim, kernel-1] and ``past.{i}.recurrent`` [B, Hv, dk, dv])."""

    conv_kernel: int  # linear_conv_kernel_dim
    key_head_dim: int  # dk
    value_head_dim: int  # dv
    num_key_heads: int  # Hk
    num_value_heads: int  # Hv

    @property
    def conv_dim(self) -> int:
        return 2 * self.num_key_heads * self.key_head_dim + self.num_value_heads * self.value_head_dim


FULL_ATTENTION, LINEAR_ATTENTION = "full_attention", "linear_attention"


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
    attention_bias: bool = False  # q/k/v/o projections with biases (no released Qwen3-VL has them)
    # the rotary embedding covers this share of head_dim (Qwen3.5: 0.25)
    partial_rotary_factor: float = 1.0
    # Qwen3.5: each layer's kind (FULL_ATTENTION or LINEAR_ATTENTION) and the linear layers' shape;
    # () and None: every layer is full attention (Qwen3-VL)
    layer_types: tuple[str, ...] = ()
    linear: LinearAttentionSpec | None = None

    @property
    def rotary_dim(self) -> int:
        """How many channels of a head the (multimodal) rotary embedding turns (transformers' rule)."""
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def full_attention_layers(self) -> tuple[int, ...]:
        """The layers with a KV cache."""
        return tuple(i for i in range(self.num_hidden_layers) if not self.layer_types or self.layer_types[i] == FULL_ATTENTION)

    @property
    def linear_attention_layers(self) -> tuple[int, ...]:
        """The layers with a convolution and a recurrent state instead."""
        return tuple(i for i, kind in enumerate(self.layer_types) if kind == LINEAR_ATTENTION)


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
    deepstack_visual_indexes: tuple[int, ...]  # () for Qwen3.5, whose tower has no DeepStack

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


# The most a config may ask for. Far above every released Qwen3-VL (235B-A22B: 94 text layers of
# 4096, 128 experts; vision depth 27 of 1152; vocabulary 151936), low enough that a damaged or
# hostile number is refused before anything is sized from it.
LIMITS: dict[str, int] = {
    "num_hidden_layers": 1024,
    "depth": 1024,
    "hidden_size": 1 << 16,
    "out_hidden_size": 1 << 16,
    "intermediate_size": 1 << 20,
    "moe_intermediate_size": 1 << 20,
    "shared_expert_intermediate_size": 1 << 20,
    "num_attention_heads": 1024,
    "num_key_value_heads": 1024,
    "num_heads": 1024,
    "head_dim": 4096,
    "vocab_size": 1 << 24,
    "num_position_embeddings": 1 << 20,
    "max_position_embeddings": 1 << 30,
    "num_experts": 4096,
    "num_local_experts": 4096,
    "num_experts_per_tok": 4096,
    "decoder_sparse_step": 1024,
    "full_attention_interval": 1024,
    "linear_conv_kernel_dim": 64,
    "linear_key_head_dim": 4096,
    "linear_value_head_dim": 4096,
    "linear_num_key_heads": 1024,
    "linear_num_value_heads": 1024,
    "in_channels": 16,
    "patch_size": 1024,
    "temporal_patch_size": 64,
    "spatial_merge_size": 64,
}


@dataclasses.dataclass(frozen=True)
class Qwen3VLSpec:
    architecture: Architecture  # the registry entry (HF class, og type, weight layout)
    text: TextSpec
    vision: VisionSpec
    image_processor: PixelSettings
    video_processor: PixelSettings
    frame_sampling: FrameSampling
    tokens: TokenSpec
    tie_word_embeddings: bool
    generation: dict[str, Any]

    @property
    def hf_class(self) -> str:
        """The checkpoint's transformers class name (config.json ``architectures[0]``)."""
        return self.architecture.hf_class

    @property
    def og_model_type(self) -> str:
        return self.architecture.og_model_type

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
        if sum(t.mrope_section) != t.rotary_dim // 2:
            share = t.partial_rotary_factor
            rotary = "head_dim // 2" if share == 1 else f"int(head_dim * partial_rotary_factor={share}) // 2"
            problems.append(f"sum(mrope_section)={sum(t.mrope_section)} != {rotary} = {t.rotary_dim // 2}")
        if len(t.mrope_section) != 3:
            problems.append(f"mrope_section must have 3 entries (t, h, w), got {list(t.mrope_section)}")
        if t.num_attention_heads % t.num_key_value_heads:
            problems.append(f"num_attention_heads={t.num_attention_heads} is not a multiple of num_key_value_heads={t.num_key_value_heads}")
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
        problems += _expert_problems(self.architecture, t)
        problems += _linear_problems(self.architecture, t)
        if problems:
            raise CheckpointError("the checkpoint's configuration is inconsistent: " + "; ".join(problems))

    # ------------------------------------------------------------------ parsing
    @classmethod
    def from_checkpoint(cls, checkpoint_dir: str | Path) -> "Qwen3VLSpec":
        root = Path(checkpoint_dir)
        config = _object(_read_json(root / "config.json", required=True), root / "config.json")
        architectures = config.get("architectures") or []
        if not isinstance(architectures, list) or not all(isinstance(a, str) for a in architectures):
            raise CheckpointError(f"{root / 'config.json'} architectures must be a list of class names, got {_show(architectures)}")
        name = architectures[0] if architectures else f"<none; model_type={config.get('model_type')!r}>"
        arch = architecture(name, str(root / "config.json"))
        text_cfg = config.get("text_config") or {}
        vision_cfg = config.get("vision_config") or {}
        if not text_cfg or not vision_cfg:
            raise CheckpointError(f"{root / 'config.json'} has no text_config/vision_config section")
        for section, value in (("text_config", text_cfg), ("vision_config", vision_cfg)):
            if not isinstance(value, dict):
                raise CheckpointError(f"{root / 'config.json'} {section} must be a JSON object, got {_show(value)}")

        text = _text_spec(text_cfg, config, arch)
        vision = _vision_spec(vision_cfg)
        image_cfg, image_path = image_processor_config(root)
        video_cfg = video_processor_config(root)
        try:
            image_proc = image_settings(image_cfg)
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"{image_path} {exc}") from None
        try:
            video_proc = video_settings(video_cfg)
            frames = FrameSampling.from_config(video_cfg)
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"{root}: the video processor settings {exc}") from None
        generation = _object(_read_json(root / "generation_config.json") or {}, root / "generation_config.json")
        tokens = _token_spec(arch, config, text_cfg, generation, _tokenizer_vocab(root))
        tie = config.get("tie_word_embeddings", text_cfg.get("tie_word_embeddings", False))
        if not isinstance(tie, bool):
            raise CheckpointError(f"config.json tie_word_embeddings must be true or false, got {_show(tie)}")
        return cls(
            architecture=arch,
            text=text,
            vision=vision,
            image_processor=image_proc,
            video_processor=video_proc,
            frame_sampling=frames,
            tokens=tokens,
            tie_word_embeddings=tie,
            generation=generation,
        )


def checkpoint_file(root: str | Path, name: str) -> Path:
    """``root/name``, refused where it leads outside the checkpoint folder: a symlink whose
    target lies elsewhere, a name with ``..`` or an absolute one (a name in an index file).

    One layout links out on purpose: a huggingface_hub cache keeps a snapshot's files in the
    repository's ``blobs`` folder, ``models--ORG--NAME/snapshots/REV/FILE -> ../../blobs/HASH``;
    a file there is accepted for a checkpoint that is such a snapshot folder. A ``--local-dir``
    download by an older huggingface-cli links its files into the cache's blobs too, without
    naming its repository: for another folder, a link to a regular file named by its hash
    directly in some ``models--ORG--NAME/blobs/`` is accepted."""
    root = Path(root)
    if not isinstance(name, str) or not name or "\0" in name:
        raise CheckpointError(f"{root} names a file {_show(name)}, which is no file name; re-download the checkpoint")
    path = root / name
    real, home = path.resolve(), root.resolve()
    inside = [home]
    if home.parent.name == "snapshots" and home.parent.parent.name.startswith(("models--", "datasets--", "spaces--")):
        inside.append(home.parent.parent / "blobs")
    elif _hub_blob(real):
        inside.append(real.parent)
    if not any(real.is_relative_to(folder) for folder in inside):
        raise CheckpointError(f"{path} leads outside the checkpoint folder (to {real}); refusing to read it: copy the file into {root}")
    return path


def _hub_blob(real: Path) -> bool:
    """A regular file ``models--ORG--NAME/blobs/HASH`` of a huggingface_hub cache (HASH: the
    40-hex git or 64-hex sha256 name the hub gives each blob)."""
    name, folder = real.name, real.parent
    return (
        len(name) in (40, 64)
        and all(c in "0123456789abcdef" for c in name)
        and folder.name == "blobs"
        and folder.parent.name.startswith("models--")
        and real.is_file()
    )


def _read_json(path: Path, required: bool = False) -> Any:
    path = checkpoint_file(path.parent, path.name)
    if not path.is_file():
        if required:
            raise CheckpointError(f"{path} is missing: point -i at a Hugging Face Qwen3-VL checkpoint folder")
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({type(exc).__name__}: {str(exc)[:200]}); re-download the checkpoint") from None


def _object(value: Any, path: Path) -> dict:
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} must hold a JSON object, got {_show(value)}; re-download the checkpoint")
    return value


def _show(value: Any) -> str:
    """A config value for an error line: its type, and the value itself where it is short."""
    kind = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", float: "a number"}.get(type(value))
    text = repr(value)
    text = text if len(text) <= 40 else text[:37] + "..."
    return f"{text} ({kind})" if kind else text


def _int(cfg: dict, key: str, where: str, default: Any = None, minimum: int = 1) -> int:
    """A whole number from the config, within [minimum, LIMITS[key]]; one line naming it otherwise.
    ``default`` (not None) is taken where the key is absent; without one the key is required."""
    value = cfg.get(key)
    if value is None:
        if default is None:
            raise CheckpointError(f"config.json {where} has no {key!r}")
        value = default
    if not isinstance(value, int) or isinstance(value, bool):
        raise CheckpointError(f"config.json {where} {key} must be a whole number, got {_show(value)}")
    limit = LIMITS.get(key)
    if value < minimum or (limit is not None and value > limit):
        most = f" and at most {limit} (this tool's limit; released Qwen3-VL models stay far below it)" if limit else ""
        raise CheckpointError(
            f"config.json {where} {key}={_show(value)} must be at least {minimum}{most}; the config is damaged or not a Qwen3-VL one"
        )
    return value


def _ints(value: Any, key: str, where: str, limit: int) -> tuple[int, ...]:
    """A list of whole numbers (layer or block numbers, section sizes) of at most ``limit`` entries."""
    if not isinstance(value, (list, tuple)) or len(value) > limit:
        raise CheckpointError(f"config.json {where} {key} must be a list of at most {limit} whole numbers, got {_show(value)}")
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in value):
        raise CheckpointError(f"config.json {where} {key} must hold whole numbers only, got {_show(value)}")
    return tuple(value)


def _number(value: Any, key: str, where: str) -> float:
    """A finite, positive real number (eps, rope theta)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise CheckpointError(f"config.json {where} {key} must be a positive number, got {_show(value)}")
    return float(value)


# transformers' Qwen3.5 defaults where a config leaves a value out
QWEN3_5_MROPE_SECTION = (11, 11, 10)
QWEN3_5_PARTIAL_ROTARY_FACTOR = 0.25
QWEN3_5_FULL_ATTENTION_INTERVAL = 4


def _text_spec(t: dict, top: dict, arch: Architecture) -> TextSpec:
    rope = t.get("rope_parameters") or t.get("rope_scaling") or {}
    if not isinstance(rope, dict):
        raise CheckpointError(f"config.json text_config rope_parameters (or rope_scaling) must be an object, got {_show(rope)}")
    theta = rope.get("rope_theta", t.get("rope_theta", top.get("rope_theta")))
    if theta is None:
        raise CheckpointError("config.json text_config has no rope_theta (in rope_parameters or at top level)")
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise CheckpointError(f"config.json text_config uses rope_type {rope_type!r}; only Qwen3-VL's 'default' MRoPE is supported")
    section = rope.get("mrope_section")
    if not section and arch.linear_attention:
        section = list(QWEN3_5_MROPE_SECTION)  # transformers' Qwen3.5 falls back to it in code
    if not section:
        raise CheckpointError("config.json text_config has no mrope_section: not a Qwen3-VL text config")
    where = "text_config"
    heads = _int(t, "num_attention_heads", where)
    interleaved = rope.get("mrope_interleaved", True)
    if not isinstance(interleaved, bool):
        raise CheckpointError(f"config.json text_config mrope_interleaved must be true or false, got {_show(interleaved)}")
    bias = t.get("attention_bias", False)
    if not isinstance(bias, bool):
        raise CheckpointError(f"config.json text_config attention_bias must be true or false, got {_show(bias)}")
    return TextSpec(
        hidden_size=_int(t, "hidden_size", where),
        num_hidden_layers=_int(t, "num_hidden_layers", where),
        num_attention_heads=heads,
        num_key_value_heads=_int(t, "num_key_value_heads", where, default=heads),
        head_dim=_int(t, "head_dim", where),
        # Qwen3.5-MoE configs have none: every layer is an expert layer
        intermediate_size=_int(t, "intermediate_size", where, default=0, minimum=0)
        if _all_expert_layers(arch)
        else _int(t, "intermediate_size", where),
        vocab_size=_int(t, "vocab_size", where),
        rms_norm_eps=_number(t.get("rms_norm_eps", 1e-6), "rms_norm_eps", where),
        rope_theta=_number(theta, "rope_theta", where),
        mrope_section=_ints(section, "mrope_section", where, 16),
        mrope_interleaved=interleaved,
        max_position_embeddings=_int(t, "max_position_embeddings", where, default=262144),
        experts=expert_spec(t, sparse_layers=not _all_expert_layers(arch)),
        attention_bias=bias,
        **(_linear_fields(t, rope) if arch.linear_attention else {}),
    )


def _linear_fields(t: dict, rope: dict) -> dict[str, Any]:
    """Qwen3.5's text fields: the partial rotary share, each layer's kind, the linear layers' shape
    (transformers' defaults where the config leaves them out)."""
    where = "text_config"
    factor = rope.get("partial_rotary_factor", t.get("partial_rotary_factor", QWEN3_5_PARTIAL_ROTARY_FACTOR))
    factor = _number(factor, "partial_rotary_factor", where)
    if factor > 1:
        raise CheckpointError(f"config.json {where} partial_rotary_factor must lie in (0, 1], got {factor}")
    layers = _int(t, "num_hidden_layers", where)
    types = t.get("layer_types")
    if types is None:
        interval = _int(t, "full_attention_interval", where, default=QWEN3_5_FULL_ATTENTION_INTERVAL)
        types = [FULL_ATTENTION if (i + 1) % interval == 0 else LINEAR_ATTENTION for i in range(layers)]
    if not isinstance(types, list) or len(types) != layers or any(k not in (FULL_ATTENTION, LINEAR_ATTENTION) for k in types):
        raise CheckpointError(
            f"config.json {where} layer_types must list {FULL_ATTENTION!r} or {LINEAR_ATTENTION!r} for each of the "
            f"{layers} layers, got {_show(types)}"
        )
    linear = LinearAttentionSpec(
        conv_kernel=_int(t, "linear_conv_kernel_dim", where, default=4),
        key_head_dim=_int(t, "linear_key_head_dim", where, default=128),
        value_head_dim=_int(t, "linear_value_head_dim", where, default=128),
        num_key_heads=_int(t, "linear_num_key_heads", where, default=16),
        num_value_heads=_int(t, "linear_num_value_heads", where, default=32),
    )
    return {"partial_rotary_factor": factor, "layer_types": tuple(types), "linear": linear}


def _linear_problems(arch: Architecture, t: TextSpec) -> list[str]:
    if not arch.linear_attention:
        return []
    problems = []
    lin = t.linear
    if lin.num_value_heads % lin.num_key_heads:
        problems.append(f"linear_num_value_heads={lin.num_value_heads} is not a multiple of linear_num_key_heads={lin.num_key_heads}")
    if lin.conv_kernel < 2:
        problems.append(f"linear_conv_kernel_dim={lin.conv_kernel} must be at least 2")
    if not t.full_attention_layers:
        problems.append("layer_types names no full_attention layer")
    return problems


def _all_expert_layers(arch: Architecture) -> bool:
    return arch.experts is not None and not arch.experts.sparse_layers


def expert_spec(t: dict, sparse_layers: bool = True) -> ExpertSpec | None:
    """The expert part of a text config (transformers' keys), or None for a dense one.
    ``sparse_layers`` False: the architecture's transformers class routes every layer through
    experts whatever decoder_sparse_step and mlp_only_layers say (Qwen3.5-MoE), and has a shared
    expert beside them."""
    key = "num_experts" if t.get("num_experts") is not None else "num_local_experts"
    if t.get(key) is None:
        return None
    where = "text_config"
    width = _int(t, "moe_intermediate_size", where, minimum=0)
    step, dense, shared = 1, (), None
    if sparse_layers:
        step = _int(t, "decoder_sparse_step", where, default=1, minimum=0)
        dense = _ints(t.get("mlp_only_layers") or [], "mlp_only_layers", where, LIMITS["num_hidden_layers"])
    else:  # transformers' default shared width: the routed experts' own
        shared = _int(t, "shared_expert_intermediate_size", where, default=width, minimum=0)
    return ExpertSpec(
        num_experts=_int(t, key, where, minimum=0),
        top_k=_int(t, "num_experts_per_tok", where, minimum=0),
        intermediate_size=width,
        decoder_sparse_step=step,
        mlp_only_layers=dense,
        shared_intermediate_size=shared,
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
    if e.shared_intermediate_size is not None and e.shared_intermediate_size < 1:
        problems.append(f"shared_expert_intermediate_size={e.shared_intermediate_size} must be at least 1")
    if e.decoder_sparse_step < 1:
        problems.append(f"decoder_sparse_step={e.decoder_sparse_step} must be at least 1")
    outside = [i for i in e.mlp_only_layers if not 0 <= i < t.num_hidden_layers]
    if outside:
        problems.append(f"mlp_only_layers {outside} lie outside the {t.num_hidden_layers} text layers")
    return problems


def _vision_spec(v: dict) -> VisionSpec:
    where = "vision_config"
    return VisionSpec(
        depth=_int(v, "depth", where),
        hidden_size=_int(v, "hidden_size", where),
        num_heads=_int(v, "num_heads", where),
        intermediate_size=_int(v, "intermediate_size", where),
        in_channels=_int(v, "in_channels", where, default=3),
        patch_size=_int(v, "patch_size", where, default=16),
        temporal_patch_size=_int(v, "temporal_patch_size", where, default=2),
        spatial_merge_size=_int(v, "spatial_merge_size", where, default=2),
        out_hidden_size=_int(v, "out_hidden_size", where),
        num_position_embeddings=_int(v, "num_position_embeddings", where),
        deepstack_visual_indexes=_ints(v.get("deepstack_visual_indexes", ()), "deepstack_visual_indexes", where, LIMITS["depth"]),
    )


def image_processor_config(root: Path) -> tuple[dict, Path]:
    """The image processor's settings and the file they came from: ``preprocessor_config.json``
    (hub layout) or the ``image_processor`` section of a transformers-5 ``processor_config.json``."""
    legacy = _read_json(root / "preprocessor_config.json")
    if legacy is not None:
        return _object(legacy, root / "preprocessor_config.json"), root / "preprocessor_config.json"
    combined = _read_json(root / "processor_config.json")
    if combined is not None:
        _object(combined, root / "processor_config.json")
    if combined and isinstance(combined.get("image_processor"), dict):
        return combined["image_processor"], root / "processor_config.json"
    raise CheckpointError(
        f"{root} has no preprocessor_config.json (nor processor_config.json with an image_processor section); "
        "copy it from the original checkpoint"
    )


def video_processor_config(root: Path) -> dict:
    legacy = _read_json(root / "video_preprocessor_config.json")
    if legacy is not None:
        return _object(legacy, root / "video_preprocessor_config.json")
    combined = _object(_read_json(root / "processor_config.json") or {}, root / "processor_config.json")
    return _object(combined.get("video_processor") or {}, root / "processor_config.json")


def _token_id(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < LIMITS["vocab_size"]:
        raise CheckpointError(f"the checkpoint's {key} must be a token id (a whole number from 0), got {_show(value)}")
    return value


def _as_id_list(value, key: str) -> list[int]:
    if value is None:
        return []
    return [_token_id(x, key) for x in value] if isinstance(value, (list, tuple)) else [_token_id(value, key)]


def _tokenizer_vocab(root: Path) -> dict[str, int]:
    """token -> id for the added tokens and the BPE vocabulary of tokenizer.json (entries that are
    not token -> id are left out; og's tokenizer reports a broken file itself)."""
    tok = _read_json(root / "tokenizer.json")
    tok = tok if isinstance(tok, dict) else {}
    model = tok.get("model") if isinstance(tok.get("model"), dict) else {}
    vocab = model.get("vocab") if isinstance(model.get("vocab"), dict) else {}
    vocab = {k: v for k, v in vocab.items() if isinstance(v, int)}
    added = tok.get("added_tokens") if isinstance(tok.get("added_tokens"), list) else []
    for entry in added:
        if isinstance(entry, dict) and isinstance(entry.get("content"), str) and isinstance(entry.get("id"), int):
            vocab[entry["content"]] = entry["id"]
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
        return _token_id(value, key)

    def optional(key: str) -> int | None:
        value = first(generation.get(key), text.get(key), top.get(key))
        return None if value is None else _token_id(value, key)

    eos: list[int] = []
    for source in (generation.get("eos_token_id"), text.get("eos_token_id"), top.get("eos_token_id")):
        for token in _as_id_list(source, "eos_token_id"):
            if token not in eos:
                eos.append(token)
    if not eos:
        raise CheckpointError("no eos_token_id in generation_config.json or config.json")
    return TokenSpec(
        image_token_id=marker("image_token_id", arch.image_token),
        video_token_id=marker("video_token_id", arch.video_token),
        vision_start_token_id=marker("vision_start_token_id", arch.vision_start_token),
        vision_end_token_id=marker("vision_end_token_id", arch.vision_end_token),
        bos_token_id=optional("bos_token_id"),
        pad_token_id=optional("pad_token_id"),
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
