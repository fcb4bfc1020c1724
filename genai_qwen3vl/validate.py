"""Checks of the exported folder: graph I/O against the contract (always run by the builder)
and parity against transformers (``genai_qwen3vl.parity``, used by the tests and --validate)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

import onnx

from . import io_contract
from .errors import Qwen3VLExportError
from .spec import Qwen3VLSpec

_ONNX_TO_NAME = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.BFLOAT16: "bfloat16",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
}


def _shape(value: onnx.ValueInfoProto) -> tuple:
    return tuple(d.dim_param if d.dim_param else d.dim_value for d in value.type.tensor_type.shape.dim)


def check_graph_io(path: Path, contract: io_contract.GraphContract, spec: Qwen3VLSpec, io_dtype: str = "fp32") -> None:
    """Raise if the graph's declared inputs/outputs differ from the contract's names, dtypes
    (``io_dtype``: the float type the graphs exchange) or fixed dims (symbolic dims must stay
    symbolic)."""
    model = onnx.load(str(path), load_external_data=False)
    values = {v.name: v for v in list(model.graph.input) + list(model.graph.output)}
    problems = []
    for decl in contract.inputs + contract.outputs:
        value = values.get(decl.name)
        if value is None:
            problems.append(f"missing {decl.name}")
            continue
        dtype = _ONNX_TO_NAME.get(value.type.tensor_type.elem_type, str(value.type.tensor_type.elem_type))
        if dtype != decl.concrete_dtype(io_dtype):
            problems.append(f"{decl.name} has dtype {dtype}, contract says {decl.concrete_dtype(io_dtype)}")
        got, want = _shape(value), decl.concrete_shape(spec)
        if len(got) != len(want):
            problems.append(f"{decl.name} has rank {len(got)}, contract says {len(want)}")
            continue
        for axis, (g, w) in enumerate(zip(got, want)):
            if w == io_contract.LOGITS_POSITIONS:
                if not (g == 1 or (isinstance(g, str) and g)):
                    problems.append(f"{decl.name} dim {axis} is {g!r}, contract says a symbolic dim or 1")
                continue
            if isinstance(w, int) and g != w:
                problems.append(f"{decl.name} dim {axis} is {g}, contract says {w}")
            if isinstance(w, str) and (isinstance(g, int) and g > 0):
                problems.append(f"{decl.name} dim {axis} is fixed to {g}, contract says symbolic {w}")
    if contract is io_contract.DECODER:
        layers = spec.text.num_hidden_layers
        for pattern in (io_contract.PAST_KEY, io_contract.PAST_VALUE, io_contract.PRESENT_KEY, io_contract.PRESENT_VALUE):
            missing = [pattern % i for i in range(layers) if pattern % i not in values]
            if missing:
                problems.append(f"missing {', '.join(missing)}")
    if problems:
        raise Qwen3VLExportError(f"{path.name} does not match its I/O contract: " + "; ".join(problems))


# --------------------------------------------------------------------------- --validate
@dataclasses.dataclass
class Row:
    """One line of the validation table."""

    artifact: str
    case: str
    max_diff: float | None  # None: not run (see note)
    tolerance: float
    note: str = ""

    @property
    def limit(self) -> float:
        """The tolerance at this difference's scale (see tolerances.Bound)."""
        scale = getattr(self.max_diff, "scale", 0.0)
        return self.tolerance.limit(scale) if hasattr(self.tolerance, "limit") else float(self.tolerance)

    @property
    def passed(self) -> bool:
        return self.max_diff is None or self.max_diff <= self.limit


def folder_variant(out_dir: Path, work: Path, cpu_provider: bool = False, replace: dict[str, Path] | None = None) -> Path:
    """A view of an exported folder (links to its files) with some files replaced and,
    optionally, every genai_config section on the CPU provider."""
    view = Path(tempfile.mkdtemp(prefix="variant-", dir=work))
    replace = replace or {}
    for item in Path(out_dir).iterdir():
        if item.is_file() and item.name not in replace and item.name != "genai_config.json":
            (view / item.name).symlink_to(item.resolve())
    for name, path in replace.items():
        shutil.copyfile(path, view / name)
    config = json.loads((Path(out_dir) / "genai_config.json").read_text())
    if cpu_provider:
        for section in ("decoder", "embedding", "vision"):
            config["model"][section]["session_options"]["provider_options"] = []
    (view / "genai_config.json").write_text(json.dumps(config, indent=4))
    return view


def with_accuracy_level(model_path: Path, level: int, work: Path) -> Path:
    """A copy of a MatMulNBits graph (weights shared) with every accuracy_level set to ``level``."""
    model = onnx.load(str(model_path), load_external_data=False)
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            attrs = [a for a in node.attribute if a.name != "accuracy_level"]
            del node.attribute[:]
            node.attribute.extend(attrs + [onnx.helper.make_attribute("accuracy_level", level)])
    path = Path(work) / "model.onnx"
    onnx.save(model, str(path))
    return path


def _generated_cases(ref) -> list[tuple[str, list, list]]:
    from .tiny import make_picture

    def ask(*items, text):
        return [{"role": "user", "content": [*items, {"type": "text", "text": text}]}]

    image = {"type": "image"}
    return [
        ("text prompt", ask(text="Write a short poem about the sea."), []),
        ("one image", ask(image, text="Describe this image."), [make_picture(480, 640, 1)]),
        ("two images", ask(image, image, text="What differs?"), [make_picture(96, 128, 2), make_picture(300, 200, 3)]),
    ]


def validate_export(out_dir: Path, checkpoint_dir: Path, precision: str) -> list[Row]:
    """Parity of an exported folder against transformers (the checks the tests run), on this
    machine's CPU. int4 graphs are checked with accuracy_level=1 against transformers on the
    dequantized weights; fp16 graphs against transformers in fp16; bf16 decoders need CUDA."""
    import torch
    from PIL import Image
    from transformers.utils import logging as hf_logging

    from . import parity
    from .tolerances import tolerance

    hf_logging.disable_progress_bar()
    tol = tolerance(precision)
    ref = parity.Reference.load(checkpoint_dir)
    rows: list[Row] = []
    work = Path(tempfile.mkdtemp(prefix="genai_qwen3vl-validate-"))
    try:
        folder = Path(out_dir)
        if precision in ("fp16", "bf16"):
            folder = folder_variant(out_dir, work, cpu_provider=True)
        reference = ref
        if precision == "int4":
            exact = with_accuracy_level(Path(out_dir) / "model.onnx", 1, Path(tempfile.mkdtemp(dir=work)))
            folder = folder_variant(out_dir, work, cpu_provider=True, replace={"model.onnx": exact})
            reference = parity.dequantized_reference(ref, out_dir)
        if precision == "fp16":
            import copy

            reference = parity.Reference(ref.spec, copy.deepcopy(ref.model).to(torch.float16), ref.processor)
        if precision != "bf16":
            for name, grids in (("one image", [[1, 4, 6]]), ("two sizes + 2 frames", [[1, 8, 4], [2, 6, 10]])):
                for key, diff in parity.vision_parity(folder, reference, grids).items():
                    rows.append(Row("vision", f"{name}: {key}", diff, tol.vision))
            for key, diff in parity.embedding_parity(folder, reference).items():
                rows.append(Row("embedding", key, diff, tol.embedding))
            for key, diff in parity.decoder_parity(folder, reference).items():
                rows.append(Row("decoder", key, diff, tol.decoder))
            for name, messages, images in _generated_cases(ref):
                prompt = ref.processor.apply_chat_template(messages, add_generation_prompt=True)
                ours = parity.og_generate(folder, prompt, images, tol.token_steps, processor="ours")
                theirs = parity.hf_generate(reference, prompt, [Image.fromarray(x) for x in images], tol.token_steps)
                cmp = parity.compare_generations(ours, theirs)
                agree = cmp.prompt_ids_equal and cmp.positions_equal and cmp.matching_steps >= tol.token_steps
                note = cmp.summary() if agree else f"MISMATCH: {cmp.summary()}"
                rows.append(Row("end to end (og)", name, cmp.max_logit_diff if agree else parity.Diff(float("inf")), tol.end_to_end, note))
        else:
            for artifact in ("vision", "embedding", "decoder", "end to end (og)"):
                rows.append(Row(artifact, "-", None, tol.end_to_end, "not run: bf16 graphs need a CUDA device"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def format_rows(rows: list[Row]) -> str:
    lines = [f"{'artifact':<17} {'case':<34} {'max |diff|':>11} {'tolerance':>10}  result"]
    for r in rows:
        diff = "-" if r.max_diff is None else f"{r.max_diff:.3g}"
        result = "skipped" if r.max_diff is None else ("ok" if r.passed else "FAIL")
        lines.append(f"{r.artifact:<17} {r.case[:34]:<34} {diff:>11} {r.limit:>10.3g}  {result}  {r.note}".rstrip())
    return "\n".join(lines)
