"""Reading parts of a checkpoint's safetensors without loading the rest."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from ..errors import CheckpointError

_LFS_POINTER = b"version https://git-lfs"


def safetensors_files(checkpoint_dir: str | Path) -> dict[str, Path]:
    """Map every tensor name to the safetensors file holding it; clear errors for missing files."""
    root = Path(checkpoint_dir)
    index = root / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise CheckpointError(f"{index} is not a valid safetensors index ({exc}); re-download it") from None
        files = {name: root / fname for name, fname in weight_map.items()}
        for fpath in sorted(set(files.values())):
            if not fpath.is_file():
                raise CheckpointError(f"{fpath} is listed in {index.name} but missing; finish the download")
        return files
    single = root / "model.safetensors"
    if single.is_file():
        return {name: single for name in _keys(single)}
    found = sorted(p.name for p in root.glob("*.bin")) + sorted(p.name for p in root.glob("*.pt"))
    hint = f" (found {', '.join(found)}: convert it to safetensors)" if found else ""
    raise CheckpointError(f"{root} has no model.safetensors or model.safetensors.index.json{hint}")


def verify_weights(checkpoint_dir: str | Path) -> int:
    """Check every safetensors file is present and whole, from its header alone (no weights
    are read): a file shorter than its header says (an interrupted download) or a Git LFS
    pointer is named with the fix. Returns the total size in bytes."""
    total = 0
    for fpath in sorted(set(safetensors_files(checkpoint_dir).values())):
        size = fpath.stat().st_size
        _refuse_lfs_pointer(fpath)
        with open(fpath, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{fpath} is truncated ({size} bytes); re-download it")
            (header_len,) = struct.unpack("<Q", head)
            if header_len > size - 8:
                raise CheckpointError(
                    f"{fpath} is truncated or not a safetensors file (header of {header_len} bytes, file of {size}); re-download it"
                )
            try:
                header = json.loads(f.read(header_len))
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise CheckpointError(f"{fpath} has an unreadable safetensors header; re-download it") from None
        needed = 8 + header_len + max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        if size < needed:
            raise CheckpointError(f"{fpath} is truncated: {size} bytes where its header needs {needed}; re-download it")
        total += size
    return total


def _refuse_lfs_pointer(path: Path) -> None:
    with open(path, "rb") as f:
        if f.read(len(_LFS_POINTER)) == _LFS_POINTER:
            raise CheckpointError(f"{path} is a Git LFS pointer, not the weights; run `git lfs pull` in {path.parent}")


def _keys(path: Path) -> list[str]:
    from safetensors import SafetensorError, safe_open

    _refuse_lfs_pointer(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    except SafetensorError as exc:  # a truncated or corrupt file
        raise CheckpointError(f"{path} cannot be read ({exc}); it is truncated or corrupt, re-download it") from None


def load_submodule_state(checkpoint_dir: str | Path, prefixes: tuple[str, ...], dtype) -> dict:
    """Load only the tensors under the first of ``prefixes`` present, with the prefix removed."""
    from safetensors import SafetensorError, safe_open

    files = safetensors_files(checkpoint_dir)
    prefix = next((p for p in prefixes if any(k.startswith(p) for k in files)), None)
    if prefix is None:
        raise CheckpointError(f"no tensors named {' or '.join(p + '*' for p in prefixes)} in {checkpoint_dir}")
    by_file: dict[Path, list[str]] = {}
    for name, fpath in files.items():
        if name.startswith(prefix):
            by_file.setdefault(fpath, []).append(name)
    state = {}
    for fpath, names in by_file.items():
        try:
            with safe_open(str(fpath), framework="pt") as f:
                for name in names:
                    state[name[len(prefix):]] = f.get_tensor(name).to(dtype)
        except SafetensorError as exc:  # a truncated or corrupt file
            raise CheckpointError(f"{fpath} cannot be read ({exc}); it is truncated or corrupt, re-download it") from None
    return state
