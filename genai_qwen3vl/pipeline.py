"""The export, stage by stage: load -> vision -> embedding -> decoder -> configs -> publish.

Everything is written into a temporary folder beside the output and published with one
rename at the end, so an interrupted run never leaves a half-written model at the output path.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

from . import configs, io_contract
from .errors import CheckpointError, OptionsError, Qwen3VLExportError
from .options import ExportOptions
from .spec import Qwen3VLSpec
from .weights import verify_weights

log = logging.getLogger("genai_qwen3vl")

# Files copied from the checkpoint as they are (tokenizer, chat template, processor settings).
# processor_config.json is not among them: in the output that name is og's image pipeline.
COPIED_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.json",
    "chat_template.jinja",
    "generation_config.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
)
STAGING_PREFIX = ".genai_qwen3vl-staging-"


@contextlib.contextmanager
def stage(index: int, total: int, name: str) -> Iterator[None]:
    log.info("[%d/%d] %s ...", index, total, name)
    start = time.perf_counter()
    yield
    log.info("[%d/%d] %s done in %.1f s", index, total, name, time.perf_counter() - start)


def resolve_checkpoint(options: ExportOptions) -> Path:
    """The local checkpoint folder: ``-i`` as given, or ``-m`` downloaded through huggingface_hub."""
    if options.input_dir is not None:
        path = Path(options.input_dir)
        if not path.is_dir():
            raise CheckpointError(f"input folder {path} does not exist; give -i a Hugging Face checkpoint folder")
        return path
    from huggingface_hub import snapshot_download

    return Path(
        snapshot_download(
            options.model_name,
            cache_dir=str(options.cache_dir) if options.cache_dir else None,
            allow_patterns=["*.json", "*.safetensors", "*.jinja", "*.txt"],
        )
    )


def _check_output(options: ExportOptions) -> Path:
    out = Path(options.output_dir).resolve()
    if out.exists() and not out.is_dir():
        raise OptionsError(f"output path {out} is a file; give -o a folder")
    if out.is_dir() and any(out.iterdir()) and not options.overwrite:
        raise OptionsError(f"output folder {out} is not empty; choose another -o or pass --overwrite")
    return out


def _clean_stale_staging(parent: Path) -> None:
    """Remove staging folders left by runs that were killed (their pid no longer exists)."""
    for path in parent.glob(STAGING_PREFIX + "*"):
        pid = path.name.rsplit("-", 1)[-1]
        if pid.isdigit() and _pid_alive(int(pid)):
            continue
        shutil.rmtree(path, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def copy_checkpoint_files(checkpoint: Path, out: Path) -> list[str]:
    copied = []
    for name in COPIED_FILES:
        src = checkpoint / name
        if src.is_file():
            shutil.copy2(src, out / name)
            copied.append(name)
    if "tokenizer.json" not in copied:
        raise CheckpointError(f"{checkpoint / 'tokenizer.json'} is missing; og's tokenizer needs it")
    if "preprocessor_config.json" not in copied:
        # transformers-5 layout: the image processor lives inside processor_config.json
        combined = json.loads((checkpoint / "processor_config.json").read_text())
        configs.write_json(out / "preprocessor_config.json", combined["image_processor"])
        if combined.get("video_processor"):
            configs.write_json(out / "video_preprocessor_config.json", combined["video_processor"])
    _embed_chat_template(out)
    return copied


def _embed_chat_template(out: Path) -> None:
    """og's tokenizer reads the chat template from tokenizer_config.json; Qwen ships it beside."""
    tok_cfg_path = out / "tokenizer_config.json"
    if not tok_cfg_path.is_file():
        return
    tok_cfg = json.loads(tok_cfg_path.read_text(encoding="utf-8"))
    if tok_cfg.get("chat_template"):
        return
    template = None
    if (out / "chat_template.jinja").is_file():
        template = (out / "chat_template.jinja").read_text(encoding="utf-8")
    elif (out / "chat_template.json").is_file():
        template = json.loads((out / "chat_template.json").read_text(encoding="utf-8")).get("chat_template")
    if template:
        tok_cfg["chat_template"] = template
        tok_cfg_path.write_text(json.dumps(tok_cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# Stages run in their own process when the checkpoint is at least this large (bytes of
# safetensors), so that each stage's memory goes back to the system before the next starts:
# peak memory is the largest stage's, not their sum.
ISOLATE_ABOVE_BYTES = 1 << 30


def _torch_dtype(name: str):
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def _vision_stage(checkpoint: Path, spec: Qwen3VLSpec, out: Path, weights: str, io: str) -> None:
    from .vision import build_vision_model, export_vision

    export_vision(build_vision_model(checkpoint, spec, _torch_dtype(weights), _torch_dtype(io)), spec, out)


def _embedding_stage(checkpoint: Path, spec: Qwen3VLSpec, out: Path, weights: str, io: str) -> None:
    from .embedding import build_embedding_model, export_embedding

    export_embedding(build_embedding_model(checkpoint, spec, _torch_dtype(weights), _torch_dtype(io)), spec, out)


def _decoder_stage(checkpoint: Path, spec: Qwen3VLSpec, out: Path, options: ExportOptions) -> None:
    from .decoder import build_decoder, og_builder_options

    work = out / ".work"
    try:
        build_decoder(
            checkpoint,
            spec,
            work,
            out,
            options.precision,
            options.execution_provider,
            og_builder_options(options),
            prune_logits=options.prune_prefill_logits,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _in_stage_process(isolate: bool, fn, *args) -> None:
    """Run a stage here, or in a fresh interpreter whose memory is all returned when it ends."""
    if not isolate:
        fn(*args)
        gc.collect()
        return
    import pickle
    import subprocess
    import sys

    level = logging.getLogger("genai_qwen3vl").getEffectiveLevel()
    with tempfile.TemporaryDirectory(prefix="genai_qwen3vl-stage-") as tmp:
        payload = Path(tmp) / "stage.pkl"
        payload.write_bytes(pickle.dumps((fn.__module__, fn.__name__, args, level)))
        proc = subprocess.run([sys.executable, "-m", "genai_qwen3vl._stage", str(payload)])
        result_path = payload.with_suffix(".result")
        if not result_path.is_file():
            how = f"was killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exited with {proc.returncode}"
            raise Qwen3VLExportError(f"the {fn.__name__.strip('_')} process {how} (out of memory?)")
        error = pickle.loads(result_path.read_bytes())
    if error is not None:
        raise error


def run(options: ExportOptions) -> Path:
    """Export a checkpoint; returns the published output folder."""
    out = _check_output(options)
    total = 6
    with stage(1, total, "load checkpoint"):
        checkpoint = resolve_checkpoint(options)
        spec = Qwen3VLSpec.from_checkpoint(checkpoint)
        weight_bytes = verify_weights(checkpoint)
        log.info(
            "  %s: text %d layers x %d wide, vision %d blocks, DeepStack at %s",
            spec.architecture,
            spec.text.num_hidden_layers,
            spec.text.hidden_size,
            spec.vision.depth,
            list(spec.vision.deepstack_visual_indexes),
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale_staging(out.parent)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{out.name}-", dir=out.parent))
    # the pid suffix lets a later run tell a killed run's leftovers from a live one's
    staging = staging.rename(staging.with_name(f"{staging.name}-{os.getpid()}"))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)
    forced = os.environ.get("GENAI_QWEN3VL_ISOLATE_STAGES", "auto")
    isolate = forced == "1" or (forced != "0" and weight_bytes >= ISOLATE_ABOVE_BYTES)
    try:
        weights, io = options.vision_dtype, options.io_dtype
        with stage(2, total, f"vision ({weights})"):
            _in_stage_process(isolate, _vision_stage, checkpoint, spec, staging, weights, io)
        with stage(3, total, f"embedding ({weights})"):
            _in_stage_process(isolate, _embedding_stage, checkpoint, spec, staging, weights, io)
        with stage(4, total, f"decoder ({options.precision}, onnxruntime-genai builder + DeepStack)"):
            _in_stage_process(isolate, _decoder_stage, checkpoint, spec, staging, options)
        with stage(5, total, "configs"):
            configs.write_json(staging / "genai_config.json", configs.genai_config(spec, options))
            configs.write_json(staging / "processor_config.json", configs.processor_config(spec))
            copy_checkpoint_files(checkpoint, staging)
        with stage(6, total, "check graphs and publish"):
            from .validate import check_graph_io

            for contract in io_contract.GRAPHS.values():
                check_graph_io(staging / contract.filename, contract, spec, options.io_dtype)
            _publish(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("wrote %s", out)
    return out


def _publish(staging: Path, out: Path) -> None:
    """Replace ``out`` with ``staging`` by renames (the old folder is removed only afterwards)."""
    if out.exists():
        old = out.with_name(f"{STAGING_PREFIX}old-{out.name}-{os.getpid()}")
        out.rename(old)
        staging.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(out)
