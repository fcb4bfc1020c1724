"""``manifest.json``: what a new export records about itself (versions, options, source checkpoint,
the validation once ``--validate`` ran), ``genai-qwen3vl info`` printing it, and folders exported
before the manifest existed, which still load and validate."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import genai_qwen3vl
from genai_qwen3vl.model.folder import MANIFEST, MANIFEST_VERSION, ExportedFolder

from ..helpers import ROOT, run_cli

PRESET = "awkward"
FLAGS = ("-p", "fp32", "-e", "cpu")


def _manifest(out: Path) -> dict:
    return json.loads((out / MANIFEST).read_text())


def _info(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "genai_qwen3vl", "info", *map(str, args)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def test_a_new_export_records_how_it_was_made(exported, checkpoints):
    from genai_qwen3vl.export.cli import options_from_args
    from genai_qwen3vl.export_command import build_export_parser

    out, checkpoint = exported(PRESET, *FLAGS), checkpoints(PRESET)
    manifest = _manifest(out)
    assert manifest["manifest_version"] == MANIFEST_VERSION
    assert manifest["genai_qwen3vl_version"] == genai_qwen3vl.__version__
    assert (manifest["architecture"], manifest["og_model_type"]) == ("Qwen3VLForConditionalGeneration", "qwen3_vl")
    assert (manifest["precision"], manifest["provider"]) == ("fp32", "cpu")
    # every export option, as the flags gave them (the output folder is where the export was built)
    given = options_from_args(build_export_parser("x").parse_args(["-i", str(checkpoint), "-o", "unused", *FLAGS]))
    expected = {f.name: getattr(given, f.name) for f in dataclasses.fields(given)}
    expected = {k: str(v) if isinstance(v, Path) else v for k, v in expected.items()}
    recorded = dict(manifest["options"])
    assert isinstance(recorded.pop("output_dir"), str) and expected.pop("output_dir") == "unused"
    assert recorded == expected
    assert manifest["resolved_options"]["io_dtype"] == "fp32" and manifest["resolved_options"]["quant_layout"] is None
    # the libraries that made it, as installed
    for module in ("onnxruntime_genai", "onnxruntime", "transformers", "torch"):
        (dist,) = importlib.metadata.packages_distributions()[module]
        assert manifest["versions"][dist] == importlib.metadata.version(dist), dist
    assert all(manifest["versions"][d] == importlib.metadata.version(d) for d in manifest["versions"])
    source = manifest["source"]
    assert source["local_path"] == str(checkpoint.resolve()) and source["hub_id"] is None and source["revision"] is None
    assert source["config_sha256"] == hashlib.sha256((checkpoint / "config.json").read_bytes()).hexdigest()
    # the typed reader agrees with the file
    folder = ExportedFolder.open(out)
    assert folder.manifest.as_dict() == {k: v for k, v in manifest.items() if k not in ("og_model_type", "resolved_options")}


def test_info_prints_the_manifest_and_what_the_folder_needs(exported):
    out = exported(PRESET, *FLAGS)
    proc = _info(out, "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    manifest = _manifest(out)
    assert info["manifest"] == {k: v for k, v in manifest.items() if k not in ("og_model_type", "resolved_options")}
    assert (info["precision"], info["provider"]) == ("fp32", "cpu")
    needs = info["requirements"]
    assert needs["og_distribution"] == "onnxruntime-genai" and needs["og_versions"] == ">=0.18,<0.19"
    assert needs["installed"] == importlib.metadata.version("onnxruntime-genai") and needs["installed_fits"] is True
    assert set(needs["extras"]) == {"video", "serve"}
    assert info["files"] == {p.name: p.stat().st_size for p in out.iterdir() if p.is_file()}
    text = _info(out)
    assert text.returncode == 0, text.stderr
    for needle in (
        f"{MANIFEST} (format {MANIFEST_VERSION}), written by genai-qwen3vl {genai_qwen3vl.__version__}",
        "-p fp32 -e cpu",
        manifest["source"]["config_sha256"],
        "onnxruntime-genai>=0.18,<0.19 (installed: ",
        "pip install genai-qwen3vl",
        'pip install "genai-qwen3vl[video]"',
        'pip install "genai-qwen3vl[serve]"',
        "model.onnx.data",
        "int4_block_size",
        "validation ",
    ):
        assert needle in text.stdout, needle


@pytest.mark.parametrize("make", ["missing", "empty", "file"])
def test_info_on_what_is_not_an_export_is_one_line(tmp_path, make):
    path = tmp_path / "x"
    if make == "empty":
        path.mkdir()
    elif make == "file":
        path.write_text("x")
    proc = _info(path)
    assert proc.returncode == 2 and not proc.stdout and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: ") and str(path) in line and "builder_qwen3vl.py" in line


def test_a_folder_made_before_the_manifest_still_loads_and_validates(exported, checkpoints, tmp_path, image_file):
    import onnxruntime_genai as og

    from genai_qwen3vl.runtime.processor import Qwen3VLProcessor

    old = tmp_path / "old"
    shutil.copytree(exported(PRESET, *FLAGS), old)
    (old / MANIFEST).unlink()
    folder = ExportedFolder.open(old)
    assert folder.manifest is None and folder.precision is None and folder.provider == "cpu"
    model = og.Model(str(old))
    processor = Qwen3VLProcessor(old)
    prompt = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}])
    out = processor.process(prompt, images=[image_file(96, 128, 1)])
    generator_params = og.GeneratorParams(model)
    generator_params.set_search_options(max_length=out.input_ids.shape[1] + 2)
    generator = og.Generator(model, generator_params)
    generator.set_inputs(out.to_named_tensors())
    generator.generate_next_token()
    assert len(generator.get_sequence(0)) == out.input_ids.shape[1] + 1

    info = _info(old)
    assert info.returncode == 0 and f"{MANIFEST}: missing" in info.stdout
    assert "-p fp32 (read from model.onnx) -e cpu (read from genai_config.json)" in info.stdout
    described = json.loads(_info(old, "--json").stdout)
    assert described["manifest"] is None and (described["precision"], described["precision_from"]) == ("fp32", "model.onnx")

    proc = run_cli("-i", checkpoints(PRESET), "-o", old, "--validate_only")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "validation passed" in proc.stdout
    (warning,) = [line for line in proc.stderr.splitlines() if MANIFEST in line]
    assert warning.startswith("warning: ") and "has no manifest.json" in warning and "read from the graphs" in warning
    assert not (old / MANIFEST).exists()  # --validate_only writes nothing into the folder


def test_validate_records_its_summary_in_the_manifest(tmp_path, checkpoints):
    """``--validate`` right after the export: the result, the counts, every row's difference and
    the reference's versions go into manifest.json; ``info`` prints the result line."""
    out = tmp_path / "out"
    proc = run_cli("-i", checkpoints(PRESET), "-o", out, *FLAGS, "--validate")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (result,) = [line for line in proc.stdout.splitlines() if line.startswith("validation passed")]
    validation = _manifest(out)["validation"]
    assert validation["result"] == "passed" and validation["message"] == result
    table = [line for line in proc.stdout.splitlines()[1:] if line.startswith(("vision ", "embedding ", "decoder ", "end to end "))]
    assert validation["checks"] == validation["passed"] == len(validation["rows"]) == len(table) >= 14
    assert validation["failed"] == validation["not_run"] == 0
    for row in validation["rows"]:
        assert row["passed"] and 0 <= row["max_diff"] <= row["limit"], row
    assert set(validation["max_diff"]) == {"vision", "embedding", "decoder", "end to end (og)"}
    assert validation["reference"] == {d: importlib.metadata.version(d) for d in ("transformers", "torch")}
    assert ExportedFolder.open(out).manifest.validation["result"] == "passed"
    assert f"validation       {result} (against transformers " in _info(out).stdout


def test_the_manifest_is_a_pure_function_of_what_made_the_folder(checkpoints):
    """Every option, including the int4 ones, and what their defaults resolved to; versions and
    source as given; nothing from the machine the function runs on."""
    from genai_qwen3vl.export import configs
    from genai_qwen3vl.export.options import ExportOptions
    from genai_qwen3vl.model.precisions import INT4_RECIPES
    from genai_qwen3vl.model.spec import Qwen3VLSpec

    spec = Qwen3VLSpec.from_checkpoint(checkpoints(PRESET))
    options = ExportOptions(
        output_dir=Path("out"),
        model_name="Qwen/Qwen3-VL-2B-Instruct",
        precision="int4",
        int4_block_size=64,
        int4_recipe="mixed",
        vision_quant="int4",
    )
    source = {"hub_id": "Qwen/Qwen3-VL-2B-Instruct", "revision": "abc", "local_path": None, "config_sha256": "00"}
    versions = {"torch": "1", "onnxruntime-genai-cuda": "0.18.1"}
    manifest = configs.manifest(spec, options, source, versions)
    assert manifest == configs.manifest(spec, options, dict(source), dict(versions))
    assert manifest["source"] == source and manifest["versions"] == {"onnxruntime-genai-cuda": "0.18.1", "torch": "1"}
    assert manifest["options"]["int4_block_size"] == 64 and manifest["options"]["int4_recipe"] == "mixed"
    assert manifest["options"]["int4_accuracy_level"] is None and manifest["options"]["output_dir"] == "out"
    assert set(manifest["options"]) == {f.name for f in dataclasses.fields(ExportOptions)}
    resolved = json.loads(json.dumps(manifest, allow_nan=False))["resolved_options"]  # plain JSON
    assert resolved["accuracy_level"] == 4 and resolved["quant_layout"]["block_size"] == 64
    assert resolved["quant_layout"]["eight_bit"] == list(INT4_RECIPES["mixed"].eight_bit)
    assert resolved["vision_layout"]["default_bits"] == 4 and manifest["validation"] is None


def test_a_failed_or_incomplete_validation_is_summarized_as_plain_json():
    """What --validate records when a check fails (a token mismatch has no finite difference) or
    cannot run here: the result, the counts, and no NaN or Infinity in the file."""
    from genai_qwen3vl.model.precisions import Bound
    from genai_qwen3vl.verify.validate import Row, summarize, validation_summary

    rows = [
        Row("vision", "one image", 1e-6, Bound(1e-4)),
        Row("vision", "two", 2e-6, Bound(1e-4)),
        Row("end to end (og)", "text", float("inf"), Bound(1e-4), "MISMATCH"),
        Row("decoder", "-", None, Bound(1e-4), "not run"),
    ]
    summary = json.loads(json.dumps(validation_summary(rows), allow_nan=False))
    assert summary["result"] == "failed" and summary["message"] == summarize(rows)[1]
    assert (summary["checks"], summary["passed"], summary["failed"], summary["not_run"]) == (4, 2, 1, 1)
    assert summary["max_diff"] == {"vision": 2e-6, "end to end (og)": None}
    assert [r["max_diff"] for r in summary["rows"]] == [1e-6, 2e-6, None, None] and summary["rows"][3]["limit"] is None
    assert validation_summary(rows[:2] + rows[3:])["result"] == "incomplete" and validation_summary(rows[:2])["result"] == "passed"
