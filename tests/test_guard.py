"""Fails when an artifact, precision or preset has no parity test (optimum's test_all_models_tested)."""

import importlib
import pkgutil
from pathlib import Path

from genai_qwen3vl import io_contract
from genai_qwen3vl.options import SUPPORTED_TARGETS

from .conftest import ALL_PRESETS

ARTIFACTS = set(io_contract.GRAPHS) | {"end_to_end"}


def _parametrized(func, name):
    values = set()
    for mark in getattr(func, "pytestmark", []):
        if mark.name == "parametrize":
            names = [n.strip() for n in mark.args[0].split(",")] if isinstance(mark.args[0], str) else list(mark.args[0])
            if name in names:
                i = names.index(name)
                values |= {v[i] if len(names) > 1 else v for v in mark.args[1]}
    return values


def _parity_tests():
    found = []
    package = Path(__file__).parent
    for info in pkgutil.iter_modules([str(package)]):
        if not info.name.startswith("test_"):
            continue
        module = importlib.import_module(f"tests.{info.name}")
        for attr in vars(module).values():
            for mark in getattr(attr, "pytestmark", []):
                if callable(attr) and mark.name == "parity":
                    found.append((mark.kwargs["artifact"], attr))
    return found


def test_every_artifact_precision_and_preset_has_a_parity_test():
    """Every artifact has a parity test for every supported precision; on the CPU precisions
    (fp32, int4) for every tiny preset."""
    tests = _parity_tests()
    covered = set()
    for artifact, func in tests:
        presets = _parametrized(func, "preset") or {"(fixed)"}
        for precision in _parametrized(func, "precision"):
            for preset in presets:
                covered.add((artifact, precision, preset))
    cpu_precisions = {p for p, ep in SUPPORTED_TARGETS if ep == "cpu"}
    missing = {(a, p, m) for a in ARTIFACTS for p in cpu_precisions for m in ALL_PRESETS} - covered
    assert not missing, f"no parity test for {sorted(missing)}"
    for precision in {p for p, _ in SUPPORTED_TARGETS}:
        for artifact in ARTIFACTS:
            assert any(a == artifact and p == precision for a, p, _ in covered), f"no {precision} parity test of {artifact}"
