"""Bad input gets a one-line error naming the problem and the fix; nothing half-written is ever
left at the output path; checkpoint code never runs; a stage that fails in its own process
shows its own traceback under --verbose."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from ..helpers import ROOT, assert_clean_failure, run_cli


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
    assert_clean_failure(proc, out, shard.name, "truncated", "re-download")


def test_missing_shard_is_named(tmp_path, checkpoints):
    ckpt = _copy(checkpoints("tied"), tmp_path / "ckpt")
    shard = sorted(ckpt.glob("*.safetensors"))[0]
    shard.unlink()
    out = tmp_path / "out"
    assert_clean_failure(run_cli("-i", ckpt, "-o", out), out, shard.name, "missing")


def test_lfs_pointer_is_named(tmp_path, checkpoints):
    ckpt = _copy(checkpoints("awkward"), tmp_path / "ckpt")
    (ckpt / "model.safetensors").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n")
    out = tmp_path / "out"
    assert_clean_failure(run_cli("-i", ckpt, "-o", out), out, "model.safetensors", "git lfs pull")


def test_a_head_dim_groupqueryattention_cannot_run_is_refused_before_export(tmp_path, checkpoints):
    """onnxruntime's GroupQueryAttention fails at run time on a head size that is no multiple of 8
    (found on a random checkpoint with head_dim 18): refused up front instead."""
    ckpt = _copy(checkpoints("awkward"), tmp_path / "ckpt")
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["text_config"]["head_dim"] = 18
    cfg["text_config"]["rope_parameters"]["mrope_section"] = [3, 3, 3]
    (ckpt / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "out"
    assert_clean_failure(run_cli("-i", ckpt, "-o", out, "-p", "int4"), out, "head_dim=18", "multiple of 8", "GroupQueryAttention")


def test_not_a_checkpoint_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    assert_clean_failure(run_cli("-i", tmp_path / "empty", "-o", out), out, "config.json is missing")


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
    # a session of its own: the test can signal its process group as a terminal's Ctrl-C does
    return subprocess.Popen(
        [sys.executable, str(ROOT / "builder_qwen3vl.py"), "-i", str(ckpt), "-o", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(c) for c in f.read().split()]


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
    """Ctrl-C while the vision stage runs in its own process: the terminal signals the whole
    process group; the export exits 130 and leaves nothing behind."""
    out = tmp_path / "out"
    proc = _start_export(checkpoints("awkward"), out, env={"GENAI_QWEN3VL_ISOLATE_STAGES": "1"})
    _wait_for_stage(proc, "[2/6] vision")
    deadline = time.monotonic() + 60
    while not _children(proc.pid):  # the stage process has started
        assert proc.poll() is None and time.monotonic() < deadline, "the vision stage process never started"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".genai_qwen3vl-staging-*"))


def test_stages_in_their_own_processes_give_the_same_export(tmp_path, checkpoints, exported):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "builder_qwen3vl.py"), "-i", str(checkpoints("awkward")), "-o", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "GENAI_QWEN3VL_ISOLATE_STAGES": "1"},
        timeout=600,
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


def _without_tensor(src, dst, prefix: str):
    """A copy of a single-file checkpoint whose safetensors lack the first tensor named ``prefix*``."""
    from safetensors.numpy import load_file, save_file

    shutil.copytree(src, dst)
    tensors = load_file(str(dst / "model.safetensors"))
    dropped = sorted(k for k in tensors if k.startswith(prefix))[0]
    del tensors[dropped]
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst, dropped


def _overlapping_offsets(src, dst):
    """A copy of a single-file checkpoint whose first vision tensor's bytes overlap another
    tensor's: the header is in bounds (stage 1 passes), safetensors refuses it when the vision
    stage loads the tower."""
    import struct

    shutil.copytree(src, dst)
    path = dst / "model.safetensors"
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    name = sorted(k for k in header if k.startswith("model.visual.blocks.1.") and k.endswith(".weight"))[0]
    begin, end = header[name]["data_offsets"]
    header[name]["data_offsets"] = [begin - 4, end - 4]
    text = json.dumps(header, separators=(",", ":")).encode().ljust(n)
    assert len(text) == n
    path.write_bytes(data[:8] + text + data[8 + n :])
    return dst


def test_a_missing_tensor_is_named_before_any_stage(tmp_path, checkpoints):
    ckpt, dropped = _without_tensor(checkpoints("awkward"), tmp_path / "ckpt", "model.visual.blocks.1.")
    out = tmp_path / "out"
    proc = run_cli("-i", ckpt, "-o", out)
    assert_clean_failure(proc, out, "lacks", dropped, "re-download")
    assert "[2/6]" not in proc.stderr


def test_verbose_shows_the_stage_process_traceback(tmp_path, checkpoints):
    ckpt = _overlapping_offsets(checkpoints("awkward"), tmp_path / "ckpt")
    env = {"GENAI_QWEN3VL_ISOLATE_STAGES": "1"}
    out = tmp_path / "out"
    proc = run_cli("-i", ckpt, "-o", out, env=env)
    assert_clean_failure(proc, out, "model.safetensors", "corrupt", "re-download")
    verbose = run_cli("-i", ckpt, "-o", out, "--verbose", env=env)
    assert verbose.returncode != 0
    # the child's own frames, not only the parent's re-raise
    assert "(in the stage process)" in verbose.stderr and "in build_vision_model" in verbose.stderr, verbose.stderr[-3000:]


def test_only_file_problems_are_reported_as_file_problems(tmp_path, checkpoints, monkeypatch):
    """A corrupt file says "re-download it"; anything else (here an injected MemoryError while
    reading) is not turned into that advice."""
    import safetensors

    from genai_qwen3vl.errors import CheckpointError
    from genai_qwen3vl.export.weights import load_submodule_state

    def fail(*args, **kwargs):
        raise MemoryError("injected")

    monkeypatch.setattr(safetensors, "safe_open", fail)
    with pytest.raises(MemoryError, match="injected"):
        load_submodule_state(checkpoints("awkward"), ("model.visual.",), None)
    monkeypatch.undo()
    bad = _overlapping_offsets(checkpoints("awkward"), tmp_path / "corrupt")
    with pytest.raises(CheckpointError, match="truncated or corrupt, re-download it"):
        load_submodule_state(bad, ("model.visual.",), None)


# ---------------------------------------------------------------- paths the checkpoint names
def _as_hub_snapshot(src, cache, repo="models--local--tiny"):
    """``src`` laid out as huggingface_hub's cache keeps a download: the files in ``blobs/`` under
    their hashes, the snapshot folder holding relative links ``../../blobs/HASH`` to them."""
    import hashlib

    blobs = cache / repo / "blobs"
    snapshot = cache / repo / "snapshots" / ("0" * 40)
    blobs.mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for item in sorted(src.iterdir()):
        digest = hashlib.sha256(item.read_bytes()).hexdigest()
        shutil.copy(item, blobs / digest)
        (snapshot / item.name).symlink_to(f"../../blobs/{digest}")
    return snapshot


def test_a_hub_snapshot_whose_files_link_into_its_blobs_is_read(tmp_path, checkpoints):
    """Every file of a hub snapshot is a symlink into the repository's blobs folder: allowed, and
    only that (a link into another repository's blobs is refused)."""
    from genai_qwen3vl.errors import CheckpointError
    from genai_qwen3vl.export.checkpoint import copy_checkpoint_files, resolve_checkpoint
    from genai_qwen3vl.export.options import ExportOptions
    from genai_qwen3vl.export.weights import verify_weights
    from genai_qwen3vl.model.spec import Qwen3VLSpec

    snapshot = _as_hub_snapshot(checkpoints("tied"), tmp_path / "hub")
    folder = resolve_checkpoint(ExportOptions(output_dir=tmp_path / "out", input_dir=snapshot))
    spec = Qwen3VLSpec.from_checkpoint(folder)
    assert verify_weights(folder, spec) > 0
    (tmp_path / "out").mkdir()
    assert "tokenizer.json" in copy_checkpoint_files(folder, tmp_path / "out")

    other = _as_hub_snapshot(checkpoints("tied"), tmp_path / "hub", repo="models--someone--else")
    (snapshot / "tokenizer.json").unlink()
    (snapshot / "tokenizer.json").symlink_to(os.path.relpath((other / "tokenizer.json").resolve(), snapshot))
    with pytest.raises(CheckpointError, match="tokenizer.json leads outside the checkpoint folder"):
        resolve_checkpoint(ExportOptions(output_dir=tmp_path / "out2", input_dir=snapshot))


def test_a_local_dir_download_whose_files_link_into_a_hub_cache_is_read(tmp_path, checkpoints):
    """An older ``huggingface-cli download --local-dir`` leaves links into the cache's
    ``models--ORG--NAME/blobs/HASH``: read as usual. A link to a file in some other ``blobs``
    folder, or not named by a hash, is still refused."""
    from genai_qwen3vl.errors import CheckpointError
    from genai_qwen3vl.export.checkpoint import copy_checkpoint_files, resolve_checkpoint
    from genai_qwen3vl.export.options import ExportOptions
    from genai_qwen3vl.export.weights import verify_weights
    from genai_qwen3vl.model.spec import Qwen3VLSpec

    snapshot = _as_hub_snapshot(checkpoints("tied"), tmp_path / "hub")
    local = tmp_path / "local"
    local.mkdir()
    for link in snapshot.iterdir():
        (local / link.name).symlink_to(link.resolve())  # absolute, as huggingface_hub made them
    folder = resolve_checkpoint(ExportOptions(output_dir=tmp_path / "out", input_dir=local))
    assert verify_weights(folder, Qwen3VLSpec.from_checkpoint(folder)) > 0
    (tmp_path / "out").mkdir()
    assert "tokenizer.json" in copy_checkpoint_files(folder, tmp_path / "out")

    blob = (snapshot / "tokenizer.json").resolve()
    for target in (tmp_path / "elsewhere" / "blobs" / blob.name, blob.parent / "id_rsa"):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(blob, target)
        (local / "tokenizer.json").unlink()
        (local / "tokenizer.json").symlink_to(target)
        with pytest.raises(CheckpointError, match="tokenizer.json leads outside the checkpoint folder"):
            resolve_checkpoint(ExportOptions(output_dir=tmp_path / "out2", input_dir=local))
