"""The command line: progress per stage, one-line errors without tracebacks, nothing written on
failure, usage lines that name the program that was run, no library chatter without --verbose."""

import json
import shutil
import subprocess
import sys

import pytest

from ..helpers import ROOT, assert_clean_failure, run_cli


def test_missing_input_folder(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("-i", tmp_path / "nope", "-o", out, "-p", "fp32", "-e", "cpu")
    assert_clean_failure(proc, out, str(tmp_path / "nope"), "does not exist")


def test_input_that_is_a_file(tmp_path, checkpoints):
    out = tmp_path / "out"
    proc = run_cli("-i", checkpoints("awkward") / "config.json", "-o", out)
    assert_clean_failure(proc, out, "config.json is a file", "checkpoint folder")


def test_wrong_architecture(tmp_path, checkpoints):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(checkpoints("awkward"), ckpt)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["architectures"] = ["Qwen2_5_VLForConditionalGeneration"]
    (ckpt / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "out"
    proc = run_cli("-i", ckpt, "-o", out)
    assert_clean_failure(proc, out, "Qwen2_5_VLForConditionalGeneration", "Qwen3VLForConditionalGeneration")


@pytest.mark.parametrize(
    "args,needle",
    [
        (("-p", "fp16", "-e", "cpu"), "-p fp16 -e cpu is not supported: onnxruntime's CPU provider has no fp16 kernels"),
        (("-p", "bf16", "-e", "cpu"), "-p bf16 -e cpu is not supported"),
        (("-p", "fp32", "--int4_accuracy_level", "1"), "apply only to -p int4"),
        (("-p", "fp32", "--int4_recipe", "mixed"), "apply only to -p int4"),
        (("-p", "int4", "-e", "cuda", "--int4_recipe", "mixed"), "applies to -p int4 -e cpu"),
        (("-p", "fp16", "-e", "cpu", "--vision_precision", "fp16"), "not supported"),
        (("-p", "int4", "-e", "cpu", "--vision_precision", "fp16"), "needs -e cuda"),
        (("-p", "int4", "-e", "cuda", "--vision_quant", "int8"), "--vision_quant applies to -e cpu"),
    ],
)
def test_unsupported_target_is_refused_before_any_work(tmp_path, checkpoints, args, needle):
    out = tmp_path / "out"
    proc = run_cli("-i", checkpoints("awkward"), "-o", out, *args)
    assert_clean_failure(proc, out, needle)
    assert "[1/6]" not in proc.stderr


@pytest.mark.parametrize(
    "env,model,needles",
    [
        ({"HF_HUB_OFFLINE": "1"}, "Qwen/Qwen3-VL-2B-Instruct", ("cannot be reached", "-i")),
        # no network: a hub endpoint on a closed local port
        ({"HF_ENDPOINT": "http://127.0.0.1:9"}, "Qwen/Qwen3-VL-2B-Instruct", ("cannot be reached", "-i")),
        ({}, "not a valid//id", ("is not a Hugging Face model id", "-i")),
    ],
)
def test_hub_problems_are_one_line_suggesting_a_local_folder(tmp_path, env, model, needles):
    out = tmp_path / "out"
    proc = run_cli("-m", model, "-o", out, "-c", tmp_path / "cache", env=env)
    assert_clean_failure(proc, out, *needles)
    assert "internal error" not in proc.stderr


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
    assert {
        "vision.onnx",
        "embedding.onnx",
        "model.onnx",
        "genai_config.json",
        "processor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.json",
        "preprocessor_config.json",
    } <= names
    assert not list(tmp_path.glob(".genai_qwen3vl-staging-*"))


def test_int4_cuda_export_is_quiet_without_verbose(tmp_path, checkpoints):
    """og's int4 quantizer logs a line per node; that is --verbose output."""
    quiet = run_cli("-i", checkpoints("awkward"), "-o", tmp_path / "quiet", "-p", "int4", "-e", "cuda")
    assert quiet.returncode == 0, quiet.stderr
    lines = quiet.stderr.strip().splitlines()
    assert len(lines) <= 14 and all(line.startswith(("[", "  ", "wrote ")) for line in lines), quiet.stderr
    loud = run_cli("-i", checkpoints("awkward"), "-o", tmp_path / "loud", "-p", "int4", "-e", "cuda", "--verbose")
    assert loud.returncode == 0 and "quantize" in loud.stderr


@pytest.mark.parametrize(
    "command,prog",
    [
        ([str(ROOT / "builder_qwen3vl.py")], "builder_qwen3vl.py"),
        (["-m", "genai_qwen3vl", "export"], "genai-qwen3vl export"),
        (["-m", "genai_qwen3vl", "demo"], "genai-qwen3vl demo"),
        (["-m", "genai_qwen3vl", "chat"], "genai-qwen3vl chat"),
        (["-c", "import sys; from genai_qwen3vl.cli import builder_console; sys.exit(builder_console())"], "genai-qwen3vl-builder"),
    ],
)
def test_usage_names_the_program(command, prog):
    proc = subprocess.run([sys.executable, *command, "--help"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: {prog} "), proc.stdout[:200]


def test_top_level_command_lists_its_commands():
    proc = subprocess.run([sys.executable, "-m", "genai_qwen3vl", "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: genai-qwen3vl ")
    for command in ("export", "chat", "demo"):
        assert f"  {command} " in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "genai_qwen3vl", "nope"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2 and "invalid choice: 'nope'" in proc.stderr


def test_demo_rejects_an_unknown_preset_and_lists_them():
    proc = subprocess.run(
        [sys.executable, "-m", "genai_qwen3vl", "demo", "--preset", "huge"], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "invalid choice: 'huge'" in proc.stderr
    assert all(name in proc.stderr for name in ("awkward", "tied", "deep", "real_limits"))
    helped = subprocess.run([sys.executable, "-m", "genai_qwen3vl", "demo", "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert "awkward" in helped.stdout and "real_limits" in helped.stdout


def test_export_flags_dashed_in_genai_qwen3vl_underscored_in_the_builder_either_accepted():
    from genai_qwen3vl.cli import build_export_parser

    for dashes, shown, hidden in ((True, "--int4-block-size", "--int4_block_size"), (False, "--int4_block_size", "--int4-block-size")):
        parser = build_export_parser("x", dashes)
        helped = parser.format_help()
        assert shown in helped and hidden not in helped and ("--validate-only" if dashes else "--validate_only") in helped
        for spelling in (shown, hidden):
            args = parser.parse_args(["-i", "ckpt", "-o", "out", spelling, "64", "--max-length" if dashes else "--max_length", "100"])
            assert args.int4_block_size == 64 and args.max_length == 100
        assert parser.parse_args(["--model-name", "a/b", "-o", "o"]).model_name == "a/b"
        assert parser.parse_args(["--model_name", "a/b", "-o", "o"]).model_name == "a/b"
