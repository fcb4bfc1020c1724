"""An on-disk cache of what the tests build (tiny checkpoints and their exports), kept across runs.

An entry is keyed by what it is (a kind such as "checkpoint" or "export", the preset, the seed, the
command-line flags) and by ``code_digest()``: this package's files, ``processor_configs/`` and the
versions of torch, transformers, onnx, onnxruntime and onnxruntime-genai. A change to any of them
builds the entry afresh; nothing is ever reused across code that could make it differently.

Several test processes may share one cache at once. An entry is built in a temporary folder beside
the others and renamed into place (a reader sees a whole entry or none), under a per-entry lock so
that two processes do not build the same one twice. Each entry records the size and modification
time of every file it holds: an entry that no longer matches (a test wrote into a folder it was
lent) is discarded and built again, and ``ArtifactCache.changed()`` names it at the end of a session.

The folder is ``$GENAI_QWEN3VL_TEST_CACHE``, else ``${XDG_CACHE_HOME:-~/.cache}/genai-qwen3vl-tests``;
``GENAI_QWEN3VL_TEST_CACHE=off`` turns the cache off (every session builds in its own temporary
folder). When a session opens the cache it removes entries of other code states unused for
``STALE_OTHER_CODE``, any entry unused for ``STALE_ANY``, and, while the cache holds more than
``MAX_BYTES``, entries of other code states from the least recently used on.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Mapping

ENV = "GENAI_QWEN3VL_TEST_CACHE"
OFF = ("off", "0", "no", "false")
# entries made by another state of the code: kept a while for sessions still running on it
STALE_OTHER_CODE = 30 * 60
STALE_ANY = 7 * 24 * 3600
# past this size, other code states' entries go, least recently used first
MAX_BYTES = 8 << 30
# a build folder left by a killed process
STALE_BUILD = 6 * 3600
# the libraries whose versions change what an export holds
LIBRARIES = ("torch", "transformers", "onnx", "onnxruntime", "onnxruntime_genai")
RECORD = "entry.json"

_PACKAGE = Path(__file__).resolve().parents[1]


def cache_dir(environ: Mapping[str, str] = os.environ) -> Path | None:
    """The cache folder, or None where ``GENAI_QWEN3VL_TEST_CACHE`` turns the cache off."""
    value = environ.get(ENV, "").strip()
    if value.lower() in OFF:
        return None
    if value:
        return Path(value).expanduser()
    return Path(environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "genai-qwen3vl-tests"


def _hash_tree(digest, folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            digest.update(str(path.relative_to(folder)).encode() + b"\0")
            digest.update(path.read_bytes())
            digest.update(b"\0")


def code_digest() -> str:
    """sha256 of this package's files, ``processor_configs/`` and the versions of ``LIBRARIES``."""
    import importlib

    digest = hashlib.sha256()
    _hash_tree(digest, _PACKAGE)
    configs = _PACKAGE.parent / "processor_configs"  # in a checkout; installed, it is inside the package
    if configs.is_dir():
        _hash_tree(digest, configs)
    for name in LIBRARIES:
        digest.update(f"{name}=={importlib.import_module(name).__version__}\n".encode())
    return digest.hexdigest()


def _listing(folder: Path) -> list[list]:
    """(relative path, size, mtime in ns) of every file under ``folder``: what a write changes."""
    rows = []
    for path in sorted(folder.rglob("*")):
        stat = path.lstat()
        if not path.is_dir():
            rows.append([str(path.relative_to(folder)), stat.st_size, stat.st_mtime_ns])
    return rows


def _size(folder: Path) -> int:
    """Bytes of the files under ``folder`` (those that vanish meanwhile count nothing)."""
    total = 0
    for base, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(base, name)).st_size
    return total


def _remove(path: Path) -> None:
    """Rename ``path`` aside (it disappears at once for every reader), then delete it."""
    trash = path.parent / f".trash-{path.name}-{os.getpid()}-{time.monotonic_ns()}"
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


class ArtifactCache:
    """Folders built once and kept in ``root``, keyed by kind, key and ``digest``."""

    def __init__(self, root: Path, digest: str):
        self.root = Path(root)
        self.digest = digest
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / ".locks").mkdir(exist_ok=True)
        self._taken: dict[Path, list[list]] = {}  # folder -> its listing when this process took it

    @classmethod
    def open(cls, environ: Mapping[str, str] = os.environ) -> ArtifactCache | None:
        """The cache ``GENAI_QWEN3VL_TEST_CACHE`` names (pruned), or None where it is off."""
        root = cache_dir(environ)
        if root is None:
            return None
        cache = cls(root, code_digest())
        cache.prune()
        return cache

    def entry_path(self, kind: str, key: Mapping) -> Path:
        """``KIND-PRESET-HASH``: the hash of kind, key and code digest, the rest for people reading the folder."""
        blob = json.dumps({"kind": kind, "key": key, "code": self.digest}, sort_keys=True)
        return self.root / f"{kind}-{key.get('preset', '')}-{hashlib.sha256(blob.encode()).hexdigest()[:20]}"

    @contextlib.contextmanager
    def _lock(self, entry: Path):
        with open(self.root / ".locks" / f"{entry.name}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _whole(self, entry: Path, name: str) -> list[list] | None:
        """The entry's recorded listing where its folder still matches it, else None."""
        try:
            record = json.loads((entry / RECORD).read_text())
        except (OSError, ValueError):
            return None
        if record.get("code") != self.digest or _listing(entry / name) != record.get("files"):
            return None
        return record["files"]

    def get(self, kind: str, key: Mapping, name: str, build: Callable[[Path], object]) -> Path:
        """The folder ``name`` of the entry (kind, key): taken from the cache where it is there and
        whole, else made by ``build(folder)`` in a temporary folder and renamed into place. Callers
        must not write into it (``changed()`` finds those that do)."""
        entry = self.entry_path(kind, key)
        folder = entry / name
        files = self._whole(entry, name)
        if files is None:
            with self._lock(entry):
                files = self._whole(entry, name)
                if files is None:
                    _remove(entry)
                    files = self._build(entry, kind, key, name, build)
        self._taken.setdefault(folder, files)
        self.touch(folder)
        return folder

    @staticmethod
    def touch(folder: Path) -> None:
        """Record a use of the entry holding ``folder`` (``prune`` goes by the last use)."""
        with contextlib.suppress(OSError):
            os.utime(Path(folder).parent)

    def _build(self, entry: Path, kind: str, key: Mapping, name: str, build: Callable[[Path], object]) -> list[list]:
        work = Path(tempfile.mkdtemp(prefix=f".build-{entry.name}-", dir=self.root))
        try:
            build(work / name)
            files = _listing(work / name)
            record = {"kind": kind, "key": key, "code": self.digest, "files": files}
            (work / RECORD).write_text(json.dumps(record, indent=1) + "\n")
            os.rename(work, entry)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        return files

    def changed(self) -> list[str]:
        """The entries this process took whose files changed since, or that hold something new
        beside their folder (a test wrote where the cache lent it a folder); they are removed, so
        the next session builds them again."""
        changed = []
        for folder, files in self._taken.items():
            if not folder.is_dir():
                continue
            # beside the folder: its record, and the work folders a running export or validation keeps there
            beside = {p.name for p in folder.parent.iterdir() if not p.name.startswith(".genai_qwen3vl-")} - {RECORD, folder.name}
            if beside or _listing(folder) != files:
                changed.append(folder.parent.name)
                _remove(folder.parent)
        return changed

    def prune(self, now: float | None = None, max_bytes: int = MAX_BYTES) -> list[str]:
        """Remove entries unused for ``STALE_ANY``, entries of another code state unused for
        ``STALE_OTHER_CODE``, build folders left by killed processes and, while the cache holds
        more than ``max_bytes``, other code states' entries from the least recently used on;
        returns their names."""
        now = time.time() if now is None else now
        removed = []
        others: list[tuple[float, Path]] = []  # (last use, entry) of other code states, kept
        for path in self.root.iterdir():
            try:
                age = now - path.stat().st_mtime
            except FileNotFoundError:
                continue
            if path.name.startswith((".build-", ".trash-")):
                stale = age > STALE_BUILD
            elif path.name == ".locks":
                for lock in path.iterdir():
                    with contextlib.suppress(FileNotFoundError):
                        if now - lock.stat().st_mtime > STALE_ANY:
                            lock.unlink()
                continue
            else:
                try:
                    code = json.loads((path / RECORD).read_text()).get("code")
                except (OSError, ValueError):
                    code = None
                stale = age > STALE_ANY or (code != self.digest and age > STALE_OTHER_CODE)
                if code != self.digest and not stale:
                    others.append((now - age, path))
            if stale:
                _remove(path)
                removed.append(path.name)
        total = _size(self.root)
        for _, path in sorted(others):
            if total <= max_bytes:
                break
            total -= _size(path)
            _remove(path)
            removed.append(path.name)
        return removed
