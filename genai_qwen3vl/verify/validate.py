"""``--validate`` / ``--validate_only``: an exported folder against transformers, on this
machine's CPU, with the checks and tolerances the tests use.

How each target is checked comes from its precision record: int4 graphs with
``accuracy_level`` 1 against transformers on the dequantized weights; fp16 graphs against
transformers in fp16 on onnxruntime's CPU kernels; bf16 vision and embedding graphs (which
compute in fp32 and hand bf16 features over) against transformers in fp32, through float32
boundaries; what cannot run on a CPU (bf16 decoders) is reported as not run, and a run with any
check not run never counts as passed.
"""

from __future__ import annotations

import dataclasses
import datetime
import errno
import importlib.metadata
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import onnx

from ..model import io_contract
from ..model.folder import GENAI_CONFIG, ExportedFolder, record_validation
from ..model.precisions import DTYPE_NAMES, PRECISIONS, Bound, Target, target
from ..onnx_format import ONNX_TO_NAME, set_int_attribute
from . import artifacts, generation
from .compare import limit_at
from .reference import Reference, dequantized_reference, in_dtype

ARTIFACT_LABELS = {"vision": "vision", "embedding": "embedding", "decoder": "decoder", "end_to_end": "end to end (og)"}


@dataclasses.dataclass
class Row:
    """One line of the validation table."""

    artifact: str
    case: str
    max_diff: float | None  # None: not run (see note)
    tolerance: Bound
    note: str = ""

    @property
    def ran(self) -> bool:
        return self.max_diff is not None

    @property
    def limit(self) -> float:
        """The tolerance at this difference's scale (see ``Bound``)."""
        return limit_at(self.tolerance, self.max_diff)

    @property
    def passed(self) -> bool:
        """A check that did not run did not pass."""
        return self.ran and self.max_diff <= self.limit


# --------------------------------------------------------------------------- the folder
def exported_target(out_dir: Path) -> Target:
    """The (precision, provider) an exported folder was written for: its manifest's; for a folder
    without one (exported before manifests), read from the folder: the decoder's provider in
    genai_config.json, MatMulNBits nodes (int4) or its float type."""
    folder = ExportedFolder.open(out_dir)
    if folder.manifest is not None:
        return target(folder.manifest.precision, folder.manifest.provider)
    out_dir = folder.path
    provider = folder.decoder.provider
    decoder = onnx.load(str(out_dir / folder.decoder.filename), load_external_data=False)
    if any(n.op_type == "MatMulNBits" for n in decoder.graph.node):
        precision = "int4"
    else:
        embeds = next(i for i in decoder.graph.input if i.name == "inputs_embeds")
        ours = {numpy: name for name, numpy in DTYPE_NAMES.items()}
        precision = ours[ONNX_TO_NAME[embeds.type.tensor_type.elem_type]]
    if precision not in PRECISIONS:
        raise ValueError(f"{out_dir} holds a {precision} decoder, which this version does not export")
    return target(precision, provider)


def _link_or_copy(src: Path, dst: Path) -> None:
    """A hard link where the file system allows it (onnxruntime refuses external data reached
    through a symbolic link that leaves the model's folder), else a copy."""
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        shutil.copyfile(src, dst)


def folder_variant(out_dir: Path, work: Path, cpu_provider: bool = False, replace: dict[str, Path] | None = None) -> Path:
    """A copy of an exported folder (files hard-linked) with some files replaced and, optionally,
    every genai_config section on the CPU provider."""
    view = Path(tempfile.mkdtemp(prefix="variant-", dir=work))
    replace = replace or {}
    for item in Path(out_dir).iterdir():
        if item.is_file() and item.name not in replace and item.name != GENAI_CONFIG:
            _link_or_copy(item, view / item.name)
    for name, path in replace.items():
        shutil.copyfile(path, view / name)
    config = ExportedFolder.open(out_dir).genai_config()
    if cpu_provider:
        for section in ("decoder", "embedding", "vision"):
            config["model"][section]["session_options"]["provider_options"] = []
    (view / GENAI_CONFIG).write_text(json.dumps(config, indent=4))
    return view


def with_accuracy_level(model_path: Path, level: int, work: Path) -> Path:
    """A copy of an int4 graph (its weights file shared) with the accuracy_level of every
    MatMulNBits and QMoE (mixture-of-experts) node set to ``level``."""
    model = onnx.load(str(model_path), load_external_data=False)
    for node in model.graph.node:
        if node.op_type in ("MatMulNBits", "QMoE"):
            set_int_attribute(node, "accuracy_level", level)
    path = Path(work) / model_path.name
    onnx.save(model, str(path))
    return path


def float32_boundaries(path: Path, work: Path) -> Path:
    """A copy of a graph (its weights file shared) with float32 in place of bf16 at its inputs and
    outputs (same names, Casts inside), so that numpy can feed and read it."""
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
    copy_path = Path(work) / path.name
    onnx.save(model, str(copy_path))
    return copy_path


def _has_matmulnbits(path: Path) -> bool:
    return path.is_file() and any(n.op_type == "MatMulNBits" for n in onnx.load(str(path), load_external_data=False).graph.node)


def checkable_variant(out_dir: Path, record: Target, work: Path) -> Path:
    """The folder as this machine's CPU can run it and the reference can be compared with it:
    CPU provider everywhere, int4 (and a quantized vision tower) at accuracy_level 1, bf16 graph
    boundaries in float32."""
    out_dir = Path(out_dir)
    replace: dict[str, Path] = {}
    quantized = [io_contract.DECODER.filename] if record.quantized else []
    if _has_matmulnbits(out_dir / io_contract.VISION.filename):  # --vision_quant
        quantized.append(io_contract.VISION.filename)
    for name in quantized:
        replace[name] = with_accuracy_level(out_dir / name, 1, Path(tempfile.mkdtemp(dir=work)))
    if record.io_dtype == "bf16":
        for contract in (io_contract.VISION, io_contract.EMBEDDING):
            replace[contract.filename] = float32_boundaries(out_dir / contract.filename, Path(tempfile.mkdtemp(dir=work)))
    if not replace and record.provider == "cpu":
        return out_dir
    return folder_variant(out_dir, work, cpu_provider=True, replace=replace)


def reference_for(ref: Reference, record: Target, out_dir: Path) -> Reference:
    """transformers as the target must equal it: on the dequantized int4 weights (and a quantized
    vision tower's), in fp16 for fp16
    graphs; for a mixture-of-experts checkpoint in fp32 (with the target's tolerance). transformers'
    fp16 expert layers round the routing weights to fp16 and sum the experts' outputs in fp16,
    where onnxruntime's MoE mixes in float: on the moe_hub preset our fp16 decoder is 0.011 from
    transformers fp32 and 0.044 from transformers fp16."""
    if record.quantized or _has_matmulnbits(Path(out_dir) / io_contract.VISION.filename):
        ref = dequantized_reference(ref, out_dir)
    return in_dtype(ref, "fp32" if ref.spec.text.experts is not None else record.reference_dtype)


# --------------------------------------------------------------------------- the checks
def _generated_cases() -> list[tuple[str, list, list]]:
    from .pictures import make_picture

    def ask(*items, text):
        return [{"role": "user", "content": [*items, {"type": "text", "text": text}]}]

    image = {"type": "image"}
    return [
        ("text prompt", ask(text="Write a short poem about the sea."), []),
        ("one image", ask(image, text="Describe this image."), [make_picture(480, 640, 1)]),
        ("two images", ask(image, image, text="What differs?"), [make_picture(96, 128, 2), make_picture(300, 200, 3)]),
    ]


def _end_to_end_rows(folder: Path, ref: Reference, reference: Reference, tol) -> list[Row]:
    from PIL import Image

    rows = []
    for name, messages, images in _generated_cases():
        prompt = ref.processor.apply_chat_template(messages, add_generation_prompt=True)
        ours = generation.og_generate(folder, prompt, images, tol.token_steps, processor="ours")
        theirs = generation.hf_generate(reference, prompt, [Image.fromarray(x) for x in images], tol.token_steps)
        cmp = generation.compare_generations(ours, theirs)
        problems = generation.generation_problems(cmp, tol.end_to_end, tol.token_steps)
        note = f"MISMATCH ({'; '.join(problems)}): {cmp.summary()}" if problems else cmp.summary()
        diff = generation.Diff(float("inf")) if problems else cmp.max_logit_diff
        rows.append(Row(ARTIFACT_LABELS["end_to_end"], name, diff, tol.end_to_end, note))
    return rows


def validate_export(out_dir: Path, checkpoint_dir: Path) -> list[Row]:
    """Every check of the folder's target against transformers (see the module docstring)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    out_dir = Path(out_dir)
    record = exported_target(out_dir)
    tol = record.tolerance
    ref = Reference.load(checkpoint_dir)
    rows: list[Row] = []
    # beside the output (same file system, so the weights are hard-linked, not copied)
    parent = out_dir.resolve().parent
    work = Path(tempfile.mkdtemp(prefix=".genai_qwen3vl-validate-", dir=parent if os.access(parent, os.W_OK) else None))
    try:
        reference = reference_for(ref, record, out_dir)
        folder = checkable_variant(out_dir, record, work)
        checks = {
            "vision": lambda: [
                Row("vision", f"{name}: {key}", diff, tol.vision)
                for name, grids in (("one image", [[1, 4, 6]]), ("two sizes + 2 frames", [[1, 8, 4], [2, 6, 10]]))
                for key, diff in artifacts.vision_parity(folder, reference, grids).items()
            ],
            "embedding": lambda: [Row("embedding", k, d, tol.embedding) for k, d in artifacts.embedding_parity(folder, reference).items()],
            "decoder": lambda: [Row("decoder", k, d, tol.decoder) for k, d in artifacts.decoder_parity(folder, reference).items()],
            "end_to_end": lambda: _end_to_end_rows(folder, ref, reference, tol),
        }
        for artifact, check in checks.items():
            if artifact in record.cpu_checkable:
                rows += check()
            else:
                why = f"not run: the {record.precision} {artifact.replace('_', ' ')} needs a {record.provider.upper()} device"
                rows.append(Row(ARTIFACT_LABELS[artifact], "-", None, tol.of(artifact), why))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def summarize(rows: list[Row]) -> tuple[int, str]:
    """(exit code, one line): 0 all passed, 3 some failed, 4 some not run and none failed."""
    failed = [r for r in rows if r.ran and not r.passed]
    not_run = [r for r in rows if not r.ran]
    passed = len(rows) - len(failed) - len(not_run)
    if failed:
        return 3, f"validation FAILED: {len(failed)} of {len(rows)} checks exceed the tolerance ({len(not_run)} not run)"
    if not_run:
        return 4, f"validation INCOMPLETE: {passed} checks passed, {len(not_run)} could not run on this machine (see the table)"
    return 0, f"validation passed: {passed} checks within tolerance"


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def validation_summary(rows: list[Row]) -> dict:
    """What the manifest keeps of a validation: the result line, the counts, the largest
    difference per artifact, every row, and the reference it was measured against."""
    code, message = summarize(rows)
    ran = [r for r in rows if r.ran]
    worst = {a: _finite(max(r.max_diff for r in ran if r.artifact == a)) for a in dict.fromkeys(r.artifact for r in ran)}
    return {
        "result": {0: "passed", 3: "failed", 4: "incomplete"}[code],
        "message": message,
        "checks": len(rows),
        "passed": sum(r.passed for r in rows),
        "failed": sum(r.ran and not r.passed for r in rows),
        "not_run": sum(not r.ran for r in rows),
        "max_diff": worst,  # None: a mismatch that has no finite difference (tokens differ)
        "rows": [
            {
                "artifact": r.artifact,
                "case": r.case,
                "max_diff": _finite(r.max_diff),
                "limit": _finite(r.limit) if r.ran else None,
                "passed": r.passed,
                "note": r.note,
            }
            for r in rows
        ],
        "reference": {dist: importlib.metadata.version(dist) for dist in ("transformers", "torch")},
        "validated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def record_summary(out_dir: Path, rows: list[Row]) -> bool:
    """Put the validation's summary into the folder's manifest.json; False for a folder without one."""
    return record_validation(out_dir, validation_summary(rows))


def format_rows(rows: list[Row]) -> str:
    lines = [f"{'artifact':<17} {'case':<34} {'max |diff|':>11} {'tolerance':>10}  result"]
    for r in rows:
        diff = "-" if not r.ran else f"{r.max_diff:.3g}"
        result = "NOT RUN" if not r.ran else ("ok" if r.passed else "FAIL")
        lines.append(f"{r.artifact:<17} {r.case[:34]:<34} {diff:>11} {r.limit:>10.3g}  {result}  {r.note}".rstrip())
    return "\n".join(lines)
