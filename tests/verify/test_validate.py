"""``--validate`` and ``--validate_only``: every precision's validation runs here, reports what it
could not run as not run, and fails on a damaged export."""

import shutil

import numpy as np
import pytest

from genai_qwen3vl.model.precisions import ARTIFACTS, TARGETS

from ..helpers import run_cli


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_validate_passes_on_a_good_export(tmp_path, checkpoints):
    proc = run_cli("-i", checkpoints("awkward"), "-o", tmp_path / "out", "--validate")
    assert proc.returncode == 0, proc.stderr
    assert "validation passed" in proc.stdout
    for artifact in ("vision", "embedding", "decoder", "end to end (og)"):
        assert artifact in proc.stdout


def test_validate_fails_on_a_damaged_export(tmp_path, checkpoints, exported):
    out = _copy(exported("awkward"), tmp_path / "out")
    data = bytearray((out / "vision.onnx.data").read_bytes())
    floats = np.frombuffer(data, dtype=np.float32).copy()
    floats[: len(floats) // 2] *= 1.01  # a 1% error in half the vision weights
    (out / "vision.onnx.data").write_bytes(floats.tobytes())
    proc = run_cli("-i", checkpoints("awkward"), "-o", out, "--validate_only")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "FAIL" in proc.stdout and "validation FAILED" in proc.stderr


@pytest.mark.parity(artifact="vision")
@pytest.mark.parity(artifact="embedding")
@pytest.mark.parity(artifact="decoder")
@pytest.mark.parity(artifact="end_to_end")
@pytest.mark.parametrize("target", TARGETS, ids=lambda t: f"{t.precision}-{t.provider}")
def test_validate_only_on_every_target(target, exported, checkpoints, capsys, record_parity):
    """--validate_only reads the precision from the folder and runs every check this machine's
    CPU can run; a check that cannot run is reported as not run and makes the exit code 4."""
    from genai_qwen3vl.cli import export_main

    out = exported("awkward", *target.flags)
    code = export_main(["-i", str(checkpoints("awkward")), "-o", str(out), "--validate_only"])
    captured = capsys.readouterr()
    table = captured.out
    summary = next(line for line in (captured.out + captured.err).splitlines() if line.startswith("validation "))
    record_parity(f"{target.precision}/{target.provider}: {summary}")
    not_run = [a for a in ARTIFACTS if a not in target.cpu_checkable]
    assert code == (4 if not_run else 0), table + captured.err
    rows = [line for line in table.splitlines()[1:] if line.startswith(("vision ", "embedding ", "decoder ", "end to end "))]
    assert len(rows) >= 14 and not [r for r in rows if " FAIL " in r]
    assert sum(" NOT RUN " in r for r in rows) == len(not_run)
    assert sum(r.endswith(" ok") or " ok " in r for r in rows) == len(rows) - len(not_run)
    if not_run:
        assert "validation INCOMPLETE" in captured.err and "validation passed" not in captured.out + captured.err


def test_int4_validate_right_after_the_export(tmp_path, checkpoints):
    """`-p int4 --validate`: the int4 graph at accuracy_level 1 against the dequantized weights."""
    proc = run_cli("-i", checkpoints("tied"), "-o", tmp_path / "out", "-p", "int4", "--validate")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "validation passed: 21 checks within tolerance" in proc.stdout  # K=3: 8 vision rows
    assert not list(tmp_path.glob(".genai_qwen3vl-validate-*"))  # its work folder is gone


def test_validate_only_refuses_a_precision_the_folder_does_not_hold(tmp_path, checkpoints, exported):
    out = exported("awkward", "-p", "int4", "-e", "cpu")
    proc = run_cli("-i", checkpoints("awkward"), "-o", out, "--validate_only", "-p", "fp32")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "-p fp32 given, but" in proc.stderr and "holds a -p int4 export" in proc.stderr


def test_validate_only_on_a_folder_with_no_export(tmp_path, checkpoints):
    proc = run_cli("-i", checkpoints("awkward"), "-o", tmp_path, "--validate_only")
    assert proc.returncode == 2 and "holds no exported model" in proc.stderr


@pytest.mark.parametrize("version", ["5.24.0", "5.24.3"])
def test_a_reference_release_that_departs_from_the_released_format_is_refused(version):
    from genai_qwen3vl.errors import ReferenceStackError
    from genai_qwen3vl.verify.reference import check_reference_release

    with pytest.raises(ReferenceStackError, match=rf"transformers {version} cannot be the reference: .*vision_start.*pip install"):
        check_reference_release(version)


def test_the_installed_reference_is_accepted():
    import transformers

    from genai_qwen3vl.verify.reference import check_reference_release

    for version in (transformers.__version__, "4.57.1", "5.25.0"):
        check_reference_release(version)
