"""The export, stage by stage: load -> vision -> embedding -> decoder -> configs -> publish.

Everything is written into a temporary folder beside the output and published with one
rename at the end, so an interrupted run never leaves a half-written model at the output path.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

from ..errors import CheckpointError, OptionsError
from ..model import io_contract
from ..model.folder import GENAI_CONFIG, MANIFEST
from ..model.precisions import QMOE_BLOCK_SIZES, QMOE_CUDA_WIDTH_MULTIPLE, QuantLayout
from ..model.spec import Qwen3VLSpec, checkpoint_file
from . import configs
from .checkpoint import copy_checkpoint_files, resolve_checkpoint, write_json
from .graph_check import check_graph
from .options import ExportOptions
from .stage_process import run_stage
from .weights import verify_weights

log = logging.getLogger("genai_qwen3vl")

STAGING_PREFIX = ".genai_qwen3vl-staging-"


class Interrupts:
    """Ctrl-C (SIGINT) during an export, remembered as well as raised.

    Python raises KeyboardInterrupt at whatever bytecode runs when the signal arrives, which may
    be in a destructor or a callback that swallows it ("Exception ignored in ...") or in library
    code that turns it into another error: once in 16 tries an export went on and published.
    So the flag is also checked after every stage and before the publish, an error raised after
    a Ctrl-C counts as the interrupt, and the publish renames run with SIGINT only recorded and
    are undone if one came: a Ctrl-C before the publish leaves nothing new at the output path (a
    folder --overwrite would replace stays as it was). Once published, the new export stays: a
    Ctrl-C while the replaced folder is removed, or recorded during the publish but too late to
    undo it, raises ``ExportInterrupted`` naming it."""

    def __init__(self) -> None:
        self.seen = False
        self.published: Path | None = None  # the output folder, once the publish renames are done

    def _raise(self, signum, frame) -> None:
        self.seen = True
        raise KeyboardInterrupt

    def _record(self, signum, frame) -> None:
        self.seen = True

    def check(self) -> None:
        if self.seen:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self, handler) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():  # only the main thread gets signals
            yield
            return
        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def raising(self):
        return self.installed(self._raise)

    def recording(self):
        return self.installed(self._record)


class ExportInterrupted(KeyboardInterrupt):
    """Ctrl-C after the export was published: it is complete at ``published``; ``replaced``: the
    folder it replaced (--overwrite), where its removal was stopped."""

    def __init__(self, published: Path, replaced: Path | None = None):
        super().__init__(f"interrupted after the export was published at {published}")
        self.published, self.replaced = published, replaced


@contextlib.contextmanager
def stage(index: int, total: int, name: str, interrupts: Interrupts | None = None) -> Iterator[None]:
    log.info("[%d/%d] %s ...", index, total, name)
    start = time.perf_counter()
    yield
    if interrupts is not None:
        interrupts.check()
    log.info("[%d/%d] %s done in %.1f s", index, total, name, time.perf_counter() - start)


def _check_attention(spec: Qwen3VLSpec, options: ExportOptions) -> None:
    target = options.target
    if spec.text.linear is not None and target.provider != "cpu":
        # onnxruntime's CUDA kernels for the linear-attention layers (CausalConvWithState,
        # LinearAttention) and og's CUDA path for their state have not run on a GPU here yet
        raise OptionsError(
            f"{spec.hf_class} exports for -e cpu only for now (-p fp32 or -p int4): its linear-attention layers' "
            f"onnxruntime kernels are not yet checked on a GPU by this tool; export with -e cpu"
        )
    if target.attention_op == "GroupQueryAttention" and spec.text.head_dim % 8:
        raise CheckpointError(
            f"text_config head_dim={spec.text.head_dim} is not a multiple of 8, which onnxruntime's GroupQueryAttention "
            f"(the decoder's attention op for -p {target.precision} -e {target.provider}) needs; every released "
            "Qwen3-VL has head_dim 128"
        )


def _check_experts(checkpoint: Path, spec: Qwen3VLSpec, options: ExportOptions) -> None:
    """Log the expert layers; refuse expert tensors that do not fit the config, and block sizes
    QMoE lacks, before anything is exported."""
    experts = spec.text.experts
    if experts is None:
        return
    log.info(
        "  experts: %d of width %d, top %d, on text layers %s",
        experts.num_experts,
        experts.intermediate_size,
        experts.top_k,
        list(experts.expert_layers(spec.text.num_hidden_layers)),
    )
    if spec.architecture.og_builder_class is not None:  # our expert layers read them (og's own builder: transformers)
        from .moe import CheckpointTensors

        CheckpointTensors(checkpoint, spec.architecture.experts).check_experts(experts.expert_layers(spec.text.num_hidden_layers))
    if options.target.quantized and options.int4_block_size not in QMOE_BLOCK_SIZES:
        raise OptionsError(
            f"--int4_block_size {options.int4_block_size} is not available for {spec.hf_class}: onnxruntime's "
            f"4-bit QMoE experts take block sizes {', '.join(map(str, QMOE_BLOCK_SIZES))}; choose one of them"
        )
    if options.target.quantized and options.execution_provider == "cuda":
        # onnxruntime's CUDA QMoE refuses such a decoder at its first step ("QMoE int weight-only
        # quantization requires hidden_size / inter_size to be a multiple of 64"): refuse it before exporting
        widths = (
            ("hidden_size", spec.text.hidden_size, "2048 or 4096"),
            ("moe_intermediate_size", experts.intermediate_size, "768 or 1536"),
        )
        for key, width, released in widths:
            if width % QMOE_CUDA_WIDTH_MULTIPLE:
                raise CheckpointError(
                    f"text_config {key}={width} is not a multiple of {QMOE_CUDA_WIDTH_MULTIPLE}, which onnxruntime's CUDA "
                    f"4-bit QMoE kernel needs for -p int4 -e cuda (every released Qwen3-VL-MoE has {released}); "
                    "export -p fp16 -e cuda, or -p int4 -e cpu"
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


# Stages run in their own process when the checkpoint is at least this large (bytes of
# safetensors), so that each stage's memory goes back to the system before the next starts:
# peak memory is the largest stage's, not their sum.
ISOLATE_ABOVE_BYTES = 1 << 30


def _vision_stage(checkpoint: Path, spec: Qwen3VLSpec, out: Path, weights: str, io: str, layout: QuantLayout | None) -> None:
    from .torch_export import torch_dtype
    from .vision import build_vision_model, export_vision

    path = export_vision(build_vision_model(checkpoint, spec, torch_dtype(weights), torch_dtype(io)), spec, out)
    if layout is not None:  # --vision_quant
        from .quantize import quantize_in_place

        quantize_in_place(path, layout)


def _embedding_stage(checkpoint: Path, spec: Qwen3VLSpec, out: Path, weights: str, io: str, layout: QuantLayout | None) -> None:
    from .embedding import build_embedding_model, export_embedding
    from .torch_export import torch_dtype

    path = export_embedding(build_embedding_model(checkpoint, spec, torch_dtype(weights), torch_dtype(io)), spec, out)
    if layout is not None:  # the table quantized as the LM head is
        from .quantize import quantize_embedding_table

        quantize_embedding_table(path, layout.table_bits, layout)


def _decoder_stage(checkpoint: Path, spec: Qwen3VLSpec, out: Path, options: ExportOptions) -> None:
    from .decoder import build_decoder

    work = out / ".work"
    try:
        build_decoder(checkpoint, spec, work, out, options)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(options: ExportOptions) -> Path:
    """Export a checkpoint; returns the published output folder. Ctrl-C: KeyboardInterrupt and
    nothing new at the output path, or ExportInterrupted once the export is published there (see
    ``Interrupts``)."""
    interrupts = Interrupts()
    try:
        with interrupts.raising():
            out = _run(options, interrupts)
            interrupts.check()  # a Ctrl-C recorded too late to undo the publish, or one swallowed
            return out
    except ExportInterrupted:
        raise
    except BaseException as exc:
        if interrupts.published is not None and (interrupts.seen or isinstance(exc, KeyboardInterrupt)):
            raise ExportInterrupted(interrupts.published) from exc
        if interrupts.seen and not isinstance(exc, KeyboardInterrupt):
            raise KeyboardInterrupt from exc  # whatever a stage made of the interrupt
        raise


# the libraries whose versions the manifest records, by the module the export imports
RECORDED_MODULES = ("onnxruntime_genai", "onnxruntime", "transformers", "torch", "onnx")


def library_versions() -> dict[str, str]:
    """distribution -> version of each library that made the folder (onnxruntime-genai or
    onnxruntime-genai-cuda, onnxruntime or onnxruntime-gpu: whichever provides the module)."""
    providers = importlib.metadata.packages_distributions()
    versions = {}
    for module in RECORDED_MODULES:
        for dist in providers.get(module, ()):
            versions[dist] = importlib.metadata.version(dist)
    return versions


def checkpoint_source(options: ExportOptions, checkpoint: Path) -> dict[str, str | None]:
    """The manifest's ``source``: the hub id and the revision downloaded (a hub cache's snapshot
    folder is named by its commit), or the local folder; and the sha256 of its config.json."""
    digest = hashlib.sha256(checkpoint_file(checkpoint, "config.json").read_bytes()).hexdigest()
    if options.model_name is not None:
        revision = checkpoint.name if checkpoint.parent.name == "snapshots" else None
        return {"hub_id": options.model_name, "revision": revision, "local_path": None, "config_sha256": digest}
    return {"hub_id": None, "revision": None, "local_path": str(Path(checkpoint).resolve()), "config_sha256": digest}


def _run(options: ExportOptions, interrupts: Interrupts) -> Path:
    out = _check_output(options)
    total = 6
    with stage(1, total, "load checkpoint", interrupts):
        checkpoint = resolve_checkpoint(options)
        spec = Qwen3VLSpec.from_checkpoint(checkpoint)
        _check_attention(spec, options)  # what the target cannot run, before what the weights lack
        weight_bytes = verify_weights(checkpoint, spec)
        log.info(
            "  %s: text %d layers x %d wide%s, vision %d blocks, DeepStack at %s",
            spec.hf_class,
            spec.text.num_hidden_layers,
            spec.text.hidden_size,
            f" (full attention at {list(spec.text.full_attention_layers)}, the rest linear)" if spec.text.linear else "",
            spec.vision.depth,
            list(spec.vision.deepstack_visual_indexes) or "none",
        )
        _check_experts(checkpoint, spec, options)
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
        layout = options.quant_layout
        vision = f"{weights}, Linear weights {options.vision_quant}" if options.vision_quant else weights
        with stage(2, total, f"vision ({vision})", interrupts):
            run_stage(isolate, _vision_stage, checkpoint, spec, staging, weights, io, options.vision_layout)
        table = f"int{layout.table_bits} table" if layout else weights
        with stage(3, total, f"embedding ({table})", interrupts):
            run_stage(isolate, _embedding_stage, checkpoint, spec, staging, weights, io, layout)
        with stage(4, total, f"decoder ({options.precision}, onnxruntime-genai builder + DeepStack)", interrupts):
            run_stage(isolate, _decoder_stage, checkpoint, spec, staging, options)
        with stage(5, total, "configs", interrupts):
            write_json(staging / GENAI_CONFIG, configs.genai_config(spec, options))
            write_json(staging / "processor_config.json", configs.processor_config(spec))
            copy_checkpoint_files(checkpoint, staging)
            write_json(staging / MANIFEST, configs.manifest(spec, options, checkpoint_source(options, checkpoint), library_versions()))
        with stage(6, total, "check graphs and publish"):
            for contract in io_contract.GRAPHS.values():
                check_graph(staging / contract.filename, contract, spec, options.target)
            with interrupts.recording():
                interrupts.check()
                old = _publish(staging, out, interrupts)
            try:  # published: a Ctrl-C from here on leaves the new export in place
                if old is not None:
                    shutil.rmtree(old, ignore_errors=True)
            except KeyboardInterrupt:
                raise ExportInterrupted(out, old) from None  # what is left of old, the next export removes
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("wrote %s", out)
    return out


def _publish(staging: Path, out: Path, interrupts: Interrupts) -> Path | None:
    """Replace ``out`` with ``staging`` by renames; undone if a Ctrl-C came meanwhile (SIGINT is
    only recorded while this runs). Returns the folder ``out`` was moved to, for the caller to
    remove (outside the recording window, so that Ctrl-C stops that)."""
    old = out.with_name(f"{STAGING_PREFIX}old-{out.name}-{os.getpid()}") if out.exists() else None
    if old is not None:
        out.rename(old)
    staging.rename(out)
    if interrupts.seen:
        out.rename(staging)
        if old is not None:
            old.rename(out)
        raise KeyboardInterrupt
    interrupts.published = out
    return old
