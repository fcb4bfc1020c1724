"""The command line: progress per stage, one-line errors without tracebacks, nothing written on failure."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args, timeout=600):
    return subprocess.run(
        [sys.executable, str(ROOT / "builder_qwen3vl.py"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def _assert_clean_failure(proc, out: Path, *needles):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ")
    for needle in needles:
        assert needle in last, last
    assert not out.exists()
    assert not list(out.parent.glob(".genai_qwen3vl-staging-*"))


def test_missing_input_folder(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("-i", tmp_path / "nope", "-o", out, "-p", "fp32", "-e", "cpu")
    _assert_clean_failure(proc, out, str(tmp_path / "nope"))


def test_wrong_architecture(tmp_path, checkpoints):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(checkpoints("awkward"), ckpt)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["architectures"] = ["Qwen2_5_VLForConditionalGeneration"]
    (ckpt / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "out"
    proc = run_cli("-i", ckpt, "-o", out)
    _assert_clean_failure(proc, out, "Qwen2_5_VLForConditionalGeneration", "Qwen3VLForConditionalGeneration")


@pytest.mark.parametrize(
    "args,needle",
    [
        (("-p", "fp16", "-e", "cpu"), "-p fp16 -e cpu is not supported: onnxruntime's CPU provider has no fp16 kernels"),
        (("-p", "bf16", "-e", "cpu"), "-p bf16 -e cpu is not supported"),
        (("-p", "fp32", "--int4_accuracy_level", "1"), "apply only to -p int4"),
        (("-p", "fp16", "-e", "cpu", "--vision_precision", "fp16"), "not supported"),
        (("-p", "int4", "-e", "cpu", "--vision_precision", "fp16"), "needs -e cuda"),
    ],
)
def test_unsupported_target_is_refused_before_any_work(tmp_path, checkpoints, args, needle):
    out = tmp_path / "out"
    proc = run_cli("-i", checkpoints("awkward"), "-o", out, *args)
    _assert_clean_failure(proc, out, needle)
    assert "[1/6]" not in proc.stderr


def test_non_empty_output_needs_overwrite(tmp_path, checkpoints):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    proc = run_cli("-i", checkpoints("awkward"), "-o", out)
    assert proc.returncode == 2 and "--overwrite" in proc.stderr and "Traceback" not in proc.stderr
    assert (out / "keep.txt").read_text() == "mine"


def test_export_shows_progress_and_overwrites(tmp_path, checkpoints):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    proc = run_cli("-i", checkpoints("awkward"), "-o", out, "-p", "fp32", "-e", "cpu", "--overwrite")
    assert proc.returncode == 0, proc.stderr
    for n, name in enumerate(["load checkpoint", "vision", "embedding", "decoder", "configs"], start=1):
        assert f"[{n}/6] {name}" in proc.stderr
    assert "done in" in proc.stderr
    assert "torch.onnx" not in proc.stderr  # exporters' chatter goes to --verbose only
    names = {p.name for p in out.iterdir()}
    assert "stale.txt" not in names
    assert {"vision.onnx", "embedding.onnx", "model.onnx", "genai_config.json", "processor_config.json",
            "tokenizer.json", "tokenizer_config.json", "chat_template.json", "preprocessor_config.json"} <= names
    assert not list(tmp_path.glob(".genai_qwen3vl-staging-*"))
