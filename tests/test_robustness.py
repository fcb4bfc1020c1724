"""Bad input gets a one-line error naming the problem and the fix; nothing half-written is ever
left at the output path; checkpoint code never runs; the processor raises ValueError for bad
images, videos and prompts."""

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from genai_qwen3vl.processing import Qwen3VLProcessor
from genai_qwen3vl.tiny import make_picture

from .test_cli import ROOT, _assert_clean_failure, run_cli

IMG = "<|vision_start|><|image_pad|><|vision_end|>"


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


# ---------------------------------------------------------------- checkpoint problems
def test_truncated_shard_is_named(tmp_path, checkpoints):
    ckpt = _copy(checkpoints("tied"), tmp_path / "ckpt")
    shard = sorted(ckpt.glob("*.safetensors"))[-1]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    out = tmp_path / "out"
    proc = run_cli("-i", ckpt, "-o", out)
    _assert_clean_failure(proc, out, shard.name, "truncated", "re-download")


def test_missing_shard_is_named(tmp_path, checkpoints):
    ckpt = _copy(checkpoints("tied"), tmp_path / "ckpt")
    shard = sorted(ckpt.glob("*.safetensors"))[0]
    shard.unlink()
    out = tmp_path / "out"
    _assert_clean_failure(run_cli("-i", ckpt, "-o", out), out, shard.name, "missing")


def test_lfs_pointer_is_named(tmp_path, checkpoints):
    ckpt = _copy(checkpoints("awkward"), tmp_path / "ckpt")
    (ckpt / "model.safetensors").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n")
    out = tmp_path / "out"
    _assert_clean_failure(run_cli("-i", ckpt, "-o", out), out, "model.safetensors", "git lfs pull")


def test_not_a_checkpoint_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    _assert_clean_failure(run_cli("-i", tmp_path / "empty", "-o", out), out, "config.json is missing")


def test_checkpoint_code_never_runs_and_only_known_files_are_copied(tmp_path, checkpoints):
    ckpt = _copy(checkpoints("awkward"), tmp_path / "ckpt")
    sentinel = tmp_path / "pwned"
    (ckpt / "modeling_evil.py").write_text(f"open({str(sentinel)!r}, 'w').write('ran')\n")
    (ckpt / "configuration_evil.py").write_text(f"open({str(sentinel)!r}, 'w').write('ran')\n")
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["auto_map"] = {
        "AutoConfig": "configuration_evil.EvilConfig",
        "AutoModelForCausalLM": "modeling_evil.EvilModel",
        "AutoModel": "modeling_evil.EvilModel",
    }
    (ckpt / "config.json").write_text(json.dumps(cfg))
    (ckpt / "notes.bin").write_bytes(b"\0" * 10)
    out = tmp_path / "out"
    proc = run_cli("-i", ckpt, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert not sentinel.exists()
    names = {p.name for p in out.iterdir()}
    assert not names & {"modeling_evil.py", "configuration_evil.py", "notes.bin", "config.json"}


# ---------------------------------------------------------------- interruptions
def _start_export(ckpt, out, env=None):
    return subprocess.Popen(
        [sys.executable, str(ROOT / "builder_qwen3vl.py"), "-i", str(ckpt), "-o", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
    )


def _wait_for_stage(proc, marker, timeout=120):
    start = time.time()
    seen = ""
    while time.time() - start < timeout:
        line = proc.stderr.readline()
        seen += line
        if marker in line:
            return seen
        if proc.poll() is not None:
            break
    raise AssertionError(f"export never reached {marker!r}:\n{seen}")


def test_kill_9_leaves_no_output_and_next_run_cleans_up(tmp_path, checkpoints):
    out = tmp_path / "out"
    proc = _start_export(checkpoints("awkward"), out)
    _wait_for_stage(proc, "[2/6] vision")
    proc.kill()  # SIGKILL: no chance to clean up
    proc.wait()
    assert not out.exists()
    leftovers = list(tmp_path.glob(".genai_qwen3vl-staging-*"))
    assert leftovers, "a killed run leaves its staging folder (cleaned by the next run)"
    rc = run_cli("-i", checkpoints("awkward"), "-o", out)
    assert rc.returncode == 0, rc.stderr
    assert (out / "genai_config.json").is_file()
    assert not list(tmp_path.glob(".genai_qwen3vl-staging-*"))


def test_ctrl_c_exits_cleanly(tmp_path, checkpoints):
    out = tmp_path / "out"
    proc = _start_export(checkpoints("awkward"), out, env={"GENAI_QWEN3VL_ISOLATE_STAGES": "1"})
    _wait_for_stage(proc, "[2/6] vision")
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".genai_qwen3vl-staging-*"))


def test_stages_in_their_own_processes_give_the_same_export(tmp_path, checkpoints, exported):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "builder_qwen3vl.py"), "-i", str(checkpoints("awkward")), "-o", str(out)],
        capture_output=True, text=True, env={**os.environ, "GENAI_QWEN3VL_ISOLATE_STAGES": "1"}, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "constant folding" not in proc.stderr and "torch.onnx" not in proc.stderr  # library chatter stays out
    reference = exported("awkward")
    for name in ("genai_config.json", "processor_config.json", "model.onnx.data", "embedding.onnx.data"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name


def test_full_disk_leaves_nothing(tmp_path, checkpoints):
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root and mount rights)")
    try:
        out = mount / "out"
        proc = run_cli("-i", checkpoints("awkward"), "-o", out)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        assert not out.exists() and not list(mount.glob(".genai_qwen3vl-staging-*"))
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


# ---------------------------------------------------------------- --validate
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


# ---------------------------------------------------------------- processor input errors
@pytest.fixture(scope="module")
def processor(exported):
    return Qwen3VLProcessor(exported("awkward"))


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height and which holds no pixel data."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b""))
    return path


def test_bad_image_files(processor, tmp_path, image_file):
    good = image_file(64, 64, 1)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:200])
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not an image at all")
    bomb = _png_header_only(tmp_path / "bomb.png", 40000, 40000)
    cases = [
        (truncated, "truncated.png cannot be decoded"),
        (garbage, "garbage.jpg cannot be decoded"),
        (bomb, "bomb.png is too large"),
        (tmp_path / "absent.png", "absent.png does not exist"),
        (np.zeros((0, 10, 3), np.uint8), "zero size"),
        (np.zeros((10, 10, 3), np.float32), "uint8"),
        (make_picture(10, 2100), "aspect ratio"),
    ]
    for image, message in cases:
        with pytest.raises(ValueError, match=message.replace(".", r"\.")):
            processor.process(IMG, images=[image])


def test_bad_videos_and_prompts(processor, tmp_path, exported):
    with pytest.raises(ValueError, match="video 0: .*does not exist"):
        processor.process("<|vision_start|><|video_pad|><|vision_end|>", videos=[tmp_path / "none.mp4"])
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\0" * 1000)
    with pytest.raises(ValueError, match="bad.mp4 cannot be decoded"):
        processor.process("<|vision_start|><|video_pad|><|vision_end|>", videos=[bad])
    with pytest.raises(ValueError, match="video_fps has 2 entries for 1 videos"):
        processor.process("<|vision_start|><|video_pad|><|vision_end|>", videos=[np.zeros((4, 32, 32, 3), np.uint8)], video_fps=[1, 2])
    small = tmp_path / "small_context"
    shutil.copytree(exported("awkward"), small)
    cfg = json.loads((small / "genai_config.json").read_text())
    cfg["model"]["context_length"] = 8
    (small / "genai_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="longer than the model.s context of 8"):
        Qwen3VLProcessor(small).process(IMG, images=[make_picture(96, 128)])
