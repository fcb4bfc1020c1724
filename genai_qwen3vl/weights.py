"""Reading parts of a checkpoint's safetensors without loading the rest."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .errors import CheckpointError


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


def _keys(path: Path) -> list[str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    except Exception as exc:  # safetensors raises its own error types for truncated headers
        raise CheckpointError(f"{path} cannot be read ({exc}); it is truncated or corrupt, re-download it") from None


def load_submodule_state(checkpoint_dir: str | Path, prefixes: tuple[str, ...], dtype: torch.dtype) -> dict:
    """Load only the tensors under the first of ``prefixes`` present, with the prefix removed."""
    from safetensors import safe_open

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
        except CheckpointError:
            raise
        except Exception as exc:
            raise CheckpointError(f"{fpath} cannot be read ({exc}); it is truncated or corrupt, re-download it") from None
    return state
