"""Config writers: pure functions of (spec, options) -> dict.

``genai_config`` is what og reads to wire the three graphs together; ``processor_config`` is
the ort-extensions image pipeline og's stock multimodal processor runs. Both are compared
against golden JSON files in the tests, so any drift shows as a diff. ``manifest`` records how
the folder was made (``model/folder.py`` reads it back).
"""

from __future__ import annotations

import dataclasses
import json
from importlib import resources
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import CheckpointError
from ..model import io_contract
from ..model.folder import MANIFEST_VERSION
from ..model.spec import Qwen3VLSpec
from .options import ExportOptions

# PIL resample codes (HF's ``resample``) -> ort-extensions Resize ``interpolation``
_INTERPOLATION = {0: "NEAREST", 1: "LANCZOS", 2: "LINEAR", 3: "CUBIC"}


def _session_options(options: ExportOptions) -> dict[str, Any]:
    provider = options.execution_provider
    provider_options = [] if provider == "cpu" else [{provider: dict(options.target.provider_options)}]
    # 0 = onnxruntime's default, one thread per physical core. Without it og uses half the
    # logical CPUs, which on a machine without SMT (most cloud VMs) is half the cores: the
    # vision tower and the prefill then take about twice as long.
    return {"log_id": "onnxruntime-genai", "provider_options": provider_options, "intra_op_num_threads": 0}


def genai_config(spec: Qwen3VLSpec, options: ExportOptions) -> dict[str, Any]:
    t, tok = spec.text, spec.tokens
    dec, emb, vis = io_contract.DECODER, io_contract.EMBEDDING, io_contract.VISION
    gen = spec.generation
    context_length = t.max_position_embeddings
    model: dict[str, Any] = {
        "bos_token_id": tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_ids[-1],
        "context_length": context_length,
        "decoder": {
            "session_options": _session_options(options),
            "filename": dec.filename,
            "head_size": t.head_dim,
            # og sizes inputs_embeds and image_features from this: (1+K)*H carries DeepStack
            "hidden_size": spec.feature_width,
            "inputs": {
                "inputs_embeds": "inputs_embeds",
                "attention_mask": "attention_mask",
                "position_ids": "position_ids",
                "past_key_names": io_contract.PAST_KEY,
                "past_value_names": io_contract.PAST_VALUE,
            },
            "outputs": {
                "logits": "logits",
                "present_key_names": io_contract.PRESENT_KEY,
                "present_value_names": io_contract.PRESENT_VALUE,
            },
            "num_attention_heads": t.num_attention_heads,
            "num_hidden_layers": t.num_hidden_layers,
            "num_key_value_heads": t.num_key_value_heads,
        },
        "embedding": {
            "session_options": _session_options(options),
            "filename": emb.filename,
            "inputs": {"input_ids": "input_ids", "image_features": "image_features"},
            "outputs": {"inputs_embeds": "inputs_embeds"},
        },
        "vision": {
            # image sizes vary call to call: a memory pattern planned for one is waste for the
            # next, and raises the peak memory
            "session_options": {**_session_options(options), "enable_mem_pattern": False},
            "filename": vis.filename,
            "config_filename": "processor_config.json",
            "spatial_merge_size": spec.vision.spatial_merge_size,
            "patch_size": spec.vision.patch_size,
            "inputs": {"pixel_values": "pixel_values", "image_grid_thw": "image_grid_thw"},
            "outputs": {"image_features": "image_features"},
        },
        "eos_token_id": list(tok.eos_token_ids),
        "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_ids[-1],
        "image_token_id": tok.image_token_id,
        "video_token_id": tok.video_token_id,
        "vision_start_token_id": tok.vision_start_token_id,
        "type": spec.og_model_type,
        "vocab_size": t.vocab_size,
        **dict(tok.markers),
    }
    if spec.text.linear is not None:
        # og finds the linear-attention layers' state by these names; written out, as og's own
        # builder does (og's default names for them have changed between its releases)
        decoder = model["decoder"]
        decoder["inputs"].update(past_conv_names=io_contract.PAST_CONV, past_recurrent_names=io_contract.PAST_RECURRENT)
        decoder["outputs"].update(present_conv_names=io_contract.PRESENT_CONV, present_recurrent_names=io_contract.PRESENT_RECURRENT)
    search = {
        "diversity_penalty": 0.0,
        "do_sample": bool(gen.get("do_sample", False)),
        "early_stopping": True,
        "length_penalty": 1.0,
        "max_length": min(options.max_length, context_length),
        "min_length": 0,
        "no_repeat_ngram_size": 0,
        "num_beams": 1,
        "num_return_sequences": 1,
        # og shares past and present KV buffers only for GroupQueryAttention decoders
        "past_present_share_buffer": options.target.past_present_share_buffer,
        "repetition_penalty": float(gen.get("repetition_penalty", 1.0)),
        "temperature": float(gen.get("temperature", 1.0)),
        "top_k": int(gen.get("top_k", 50)),
        "top_p": float(gen.get("top_p", 1.0)),
    }
    return {"model": model, "search": search}


def _fill(node: Any, values: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        return {k: _fill(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [_fill(v, values) for v in node]
    if isinstance(node, str) and node.startswith("{") and node.endswith("}") and node[1:-1] in values:
        return values[node[1:-1]]
    return node


def load_processor_template(name: str) -> dict[str, Any]:
    """A template shipped in ``processor_configs/`` (package data once installed)."""
    local = Path(__file__).resolve().parents[2] / "processor_configs" / name
    if local.is_file():
        return json.loads(local.read_text())
    return json.loads(resources.files("genai_qwen3vl.processor_configs").joinpath(name).read_text())


def processor_config(spec: Qwen3VLSpec) -> dict[str, Any]:
    """ort-extensions pipeline equal to the checkpoint's image processor settings."""
    p = spec.image_processor
    if p.resample not in _INTERPOLATION:
        raise CheckpointError(f"preprocessor_config.json resample={p.resample} has no onnxruntime-extensions equivalent; use 0-3")
    values = {
        "interpolation": _INTERPOLATION[p.resample],
        "min_pixels": p.min_pixels,
        "max_pixels": p.max_pixels,
        "patch_size": p.patch_size,
        "merge_size": p.merge_size,
        "temporal_patch_size": p.temporal_patch_size,
        "rescale_factor": float(p.rescale_factor),
        "image_mean": [float(x) for x in p.image_mean],
        "image_std": [float(x) for x in p.image_std],
    }
    config = _fill(load_processor_template(spec.architecture.processor_template), values)
    transforms = config["processor"]["transforms"]
    skip = set()
    if not p.do_rescale:
        skip.add("rescale")
    if not p.do_normalize:
        skip.add("normalize")
    if not p.do_convert_rgb:
        skip.add("convert_to_rgb")
    config["processor"]["transforms"] = [x for x in transforms if x["operation"]["name"] not in skip]
    return config


def _json_value(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


def manifest(spec: Qwen3VLSpec, options: ExportOptions, source: dict[str, Any], versions: dict[str, str]) -> dict[str, Any]:
    """``manifest.json``: this package's version, what was exported (architecture, precision,
    provider), every export option as given and what the defaults resolved to, the libraries
    that made the folder (``versions``: distribution -> version) and the checkpoint it came from
    (``source``: hub_id and revision, or local_path, and config_sha256). ``validation`` is
    filled in by ``--validate``."""
    target = options.target
    return {
        "manifest_version": MANIFEST_VERSION,
        "genai_qwen3vl_version": __version__,
        "architecture": spec.hf_class,
        "og_model_type": spec.og_model_type,
        "precision": options.precision,
        "provider": options.execution_provider,
        "options": {f.name: _json_value(getattr(options, f.name)) for f in dataclasses.fields(options)},
        "resolved_options": {
            "io_dtype": options.io_dtype,
            "vision_dtype": options.vision_dtype,
            "accuracy_level": options.resolved_accuracy_level,
            "attention_op": target.attention_op,
            "quant_layout": dataclasses.asdict(options.quant_layout) if options.quant_layout else None,
            "vision_layout": dataclasses.asdict(options.vision_layout) if options.vision_layout else None,
        },
        "versions": dict(sorted(versions.items())),
        "source": dict(source),
        "validation": None,
    }
