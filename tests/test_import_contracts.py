"""The tier contracts in .importlinter (import-linter): they hold on the package, they fail on a
deliberately wrong import, and the list of the export's internals verify may not import is whole."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / ".importlinter"
# what verify may import from the export (its entry points): every other export module is forbidden
EXPORT_ENTRY_POINTS = {"__init__", "pipeline", "cli", "options", "checkpoint"}


def _lint(package_root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` with .importlinter on the genai_qwen3vl package found first on PYTHONPATH."""
    env = {**os.environ, "PYTHONPATH": str(package_root)}
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run(
        [str(lint), "--no-cache", "--no-logo", str(CONFIG)], cwd=package_root, env=env, capture_output=True, text=True, timeout=120
    )


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "genai_qwen3vl", tmp_path / "genai_qwen3vl", ignore=shutil.ignore_patterns("__pycache__", "static"))
    return tmp_path


def test_the_package_keeps_every_contract():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    "module,line,contract",
    [
        ("runtime/chat.py", "from ..export import quantize", "The runtime imports no export, verify or testing"),
        ("runtime/serve/engine.py", "import torch", "The runtime imports no export, verify or testing"),
        ("export/deepstack.py", "from ..verify import compare", "The export imports no verify, testing or command"),
        ("verify/artifacts.py", "from ..export.quantize import quantize_weights", "verify reaches the export only through"),
        ("model/spec.py", "from ..runtime import sampling", "The model tier imports nothing of the package"),
        ("onnx_format.py", "from .model import precisions", "onnx_format imports no tier"),
    ],
)
def test_a_wrong_import_breaks_its_contract(tmp_path, module, line, contract):
    """A copy of the package with one import that a contract forbids (inside a function, where a
    lazy import hides from a casual reading): lint-imports fails and names the contract and the line."""
    root = _copy(tmp_path)
    path = root / "genai_qwen3vl" / module
    path.write_text(path.read_text(encoding="utf-8") + f"\n\ndef _wrong():\n    {line}\n", encoding="utf-8")
    result = _lint(root)
    assert result.returncode == 1, result.stdout + result.stderr
    broken = result.stdout.split("Broken contracts", 1)[1]
    assert contract in broken
    assert f"genai_qwen3vl.{module.removesuffix('.py').replace('/', '.')} ->" in broken


def test_every_export_internal_is_forbidden_to_verify():
    parser = configparser.ConfigParser()
    parser.read(CONFIG)
    forbidden = set(parser["importlinter:contract:verify-public-export"]["forbidden_modules"].split())
    modules = {p.stem for p in (ROOT / "genai_qwen3vl" / "export").glob("*.py")}
    assert forbidden == {f"genai_qwen3vl.export.{m}" for m in modules - EXPORT_ENTRY_POINTS}
