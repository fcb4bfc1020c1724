"""The on-disk cache of checkpoints and exports (genai_qwen3vl/testing/cache.py): built once,
renamed into place whole, rebuilt when a test wrote into it or the code changed, pruned, and
shared by processes that run at the same time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from genai_qwen3vl.testing.cache import ENV, STALE_ANY, STALE_OTHER_CODE, ArtifactCache, cache_dir, code_digest

from .helpers import ROOT


def _builder(log: list):
    def build(folder):
        log.append(folder)
        folder.mkdir()
        (folder / "weights.bin").write_bytes(b"\1" * 100)
        (folder / "sub").mkdir()
        (folder / "sub" / "config.json").write_text("{}")

    return build


def test_an_entry_is_built_once_then_taken_from_disk(tmp_path):
    log = []
    first = ArtifactCache(tmp_path, "code-1").get("export", {"preset": "awkward", "flags": ["-p", "fp32"]}, "model", _builder(log))
    again = ArtifactCache(tmp_path, "code-1").get("export", {"preset": "awkward", "flags": ["-p", "fp32"]}, "model", _builder(log))
    assert first == again and first.name == "model" and len(log) == 1
    assert (first / "sub" / "config.json").read_text() == "{}"
    assert not log[0].exists()  # built elsewhere, renamed into place
    # another key, or the same key made by other code, is another entry
    other_flags = ArtifactCache(tmp_path, "code-1").get("export", {"preset": "awkward", "flags": ["-p", "int4"]}, "model", _builder(log))
    other_code = ArtifactCache(tmp_path, "code-2").get("export", {"preset": "awkward", "flags": ["-p", "fp32"]}, "model", _builder(log))
    assert len(log) == 3 and len({first, other_flags, other_code}) == 3
    assert not list(tmp_path.glob(".build-*"))


def test_a_failed_build_leaves_nothing(tmp_path):
    def fails(folder):
        folder.mkdir()
        (folder / "half.bin").write_bytes(b"\0")
        raise RuntimeError("export failed")

    cache = ArtifactCache(tmp_path, "code")
    with pytest.raises(RuntimeError, match="export failed"):
        cache.get("export", {"preset": "awkward"}, "model", fails)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".locks"]
    log = []
    assert (cache.get("export", {"preset": "awkward"}, "model", _builder(log)) / "weights.bin").exists() and len(log) == 1


@pytest.mark.parametrize("damage", ["write", "delete", "add", "beside"])
def test_an_entry_a_test_wrote_into_is_named_removed_and_built_again(tmp_path, damage):
    log = []
    cache = ArtifactCache(tmp_path, "code")
    folder = cache.get("checkpoint", {"preset": "tied"}, "ckpt_tied", _builder(log))
    if damage == "write":
        (folder / "sub" / "config.json").write_text('{"x": 1}')
    elif damage == "delete":
        (folder / "weights.bin").unlink()
    elif damage == "add":
        (folder / "stale.txt").write_text("left behind")
    else:
        (folder / "weights.bin").write_bytes(b"\3" * 100)
    # another session taking it now finds it changed and builds it again
    rebuilt = ArtifactCache(tmp_path, "code").get("checkpoint", {"preset": "tied"}, "ckpt_tied", _builder(log))
    assert rebuilt == folder and len(log) == 2 and (rebuilt / "sub" / "config.json").read_text() == "{}"
    assert sorted(p.name for p in rebuilt.iterdir()) == ["sub", "weights.bin"]
    # the session that lent it names it at its end, and removes it
    if damage == "beside":
        (folder.parent / "corrupt").mkdir()  # a copy made next to the folder lent
    else:
        (rebuilt / "weights.bin").write_bytes(b"\2" * 100)
    assert cache.changed() == [folder.parent.name] and not folder.parent.exists()


def test_an_entry_only_read_is_not_changed(tmp_path):
    cache = ArtifactCache(tmp_path, "code")
    folder = cache.get("export", {"preset": "awkward"}, "model", _builder([]))
    (folder / "weights.bin").read_bytes()
    os.link(folder / "weights.bin", tmp_path / "linked.bin")  # as validate's views link the files
    assert cache.changed() == [] and folder.is_dir()


def test_prune_keeps_what_is_current_or_recently_used(tmp_path):
    now = time.time()
    old = ArtifactCache(tmp_path, "old-code")
    kept_old = old.get("export", {"preset": "awkward"}, "model", _builder([])).parent  # a session may still run on it
    gone_old = old.get("export", {"preset": "tied"}, "model", _builder([])).parent
    os.utime(gone_old, (now - STALE_OTHER_CODE - 60,) * 2)
    current = ArtifactCache(tmp_path, "new-code")
    kept_current = current.get("export", {"preset": "awkward"}, "model", _builder([])).parent
    gone_current = current.get("export", {"preset": "tied"}, "model", _builder([])).parent
    os.utime(kept_current, (now - STALE_OTHER_CODE - 60,) * 2)
    os.utime(gone_current, (now - STALE_ANY - 60,) * 2)
    left_build = tmp_path / ".build-export-x-123"
    left_build.mkdir()
    os.utime(left_build, (now - 7 * 3600,) * 2)
    removed = current.prune(now)
    assert sorted(removed) == sorted([gone_old.name, gone_current.name, left_build.name])
    assert kept_old.is_dir() and kept_current.is_dir()
    # over the size bound, other code states' entries go first, the least recently used first
    newer_old = old.get("export", {"preset": "deep"}, "model", _builder([])).parent
    os.utime(kept_old, (now - 60,) * 2)
    total = sum(f.stat().st_size for f in tmp_path.rglob("*") if f.is_file())
    assert current.prune(now, max_bytes=total - 1) == [kept_old.name]
    assert newer_old.is_dir() and kept_current.is_dir()
    assert current.prune(now, max_bytes=0) == [newer_old.name] and kept_current.is_dir()


def test_the_folder_and_the_switch(tmp_path):
    assert cache_dir({ENV: "off"}) is None and cache_dir({ENV: "0"}) is None
    assert cache_dir({ENV: str(tmp_path)}) == tmp_path
    assert cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "genai-qwen3vl-tests"
    assert ArtifactCache.open({ENV: "off"}) is None
    assert code_digest() == code_digest()


_SHARED = """
import sys, time
from pathlib import Path
from genai_qwen3vl.testing.cache import ArtifactCache

def build(folder):
    with open(sys.argv[2], "a") as log:
        log.write("built\\n")
    time.sleep(1.0)
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"graph")

print(ArtifactCache(Path(sys.argv[1]), "code").get("export", {"preset": "awkward"}, "model", build))
"""


def test_two_processes_at_once_build_an_entry_once(tmp_path):
    log = tmp_path / "builds.log"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _SHARED, str(tmp_path / "cache"), str(log)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), outputs
    assert outputs[0][0] == outputs[1][0] and log.read_text() == "built\n"
    record = json.loads((tmp_path / "cache" / outputs[0][0].strip()).parent.joinpath("entry.json").read_text())
    assert record["key"] == {"preset": "awkward"} and record["files"][0][:2] == ["model.onnx", 5]
