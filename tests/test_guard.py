"""Fails when an artifact, target or preset has no parity test that passed in this session
(optimum's test_all_models_tested, counting tests that ran rather than test labels).

conftest.py records every passed test marked ``parity(artifact=...)`` with its ``target`` (and
``preset``) parameters, and runs this test last. A passed test counts for an artifact only if the
artifact really ran: on this machine's CPU (``Target.cpu_checkable``) or in a test marked
``cuda``, which runs on a CUDA device. What only a CUDA device can check must exist as such a
test; without a device here it is skipped and not counted.

With pytest-xdist (``-n``) no worker sees the others' tests, so conftest.py takes this test out of
the workers' collections and the process that runs the session judges ``missing_parity`` once
every worker is done, reporting it under this test's name.
"""

from pathlib import Path

import pytest

from genai_qwen3vl.model.precisions import ARTIFACTS, TARGETS, Target

from .conftest import ALL_PRESETS, CUDA_PARITY_TESTS, MOE_PRESET_NAMES, PASSED_PARITY, QWEN3_5_PRESET_NAMES, cuda_available

TESTS = Path(__file__).parent


def whole_suite(config) -> bool:
    args = [Path(a).resolve() for a in config.args]
    return not config.option.keyword and not config.option.markexpr and all(a == TESTS for a in args)


def _covered(artifact: str, target: Target, preset: str | None = None) -> bool:
    return any(a == artifact and t == target.flags and (preset is None or p == preset) for a, t, p in PASSED_PARITY)


def missing_parity() -> str | None:
    """What no passing parity test covers in this session, or None."""
    missing = []
    for target in TARGETS:
        # CPU targets: every artifact on every tiny preset, Qwen3-VL, Qwen3-VL-MoE and Qwen3.5
        if target.provider == "cpu":
            presets = ALL_PRESETS + MOE_PRESET_NAMES + QWEN3_5_PRESET_NAMES
            missing += [(a, target.flags, p) for a in ARTIFACTS for p in presets if not _covered(a, target, p)]
        # every target: every artifact this machine can check, on some preset
        checkable = ARTIFACTS if cuda_available() else target.cpu_checkable
        missing += [(a, target.flags, "any") for a in checkable if not _covered(a, target)]
    if missing:
        return f"no passing parity test for {sorted(missing)}"
    # what needs a CUDA device is tested where there is one
    needs_device = {(a, t.flags) for t in TARGETS for a in ARTIFACTS if a not in t.cpu_checkable}
    if not needs_device or not needs_device <= CUDA_PARITY_TESTS:
        return f"no test marked cuda for {sorted(needs_device - CUDA_PARITY_TESTS)}"
    return None


def test_every_artifact_target_and_preset_has_a_passing_parity_test(request):
    if not whole_suite(request.config):
        pytest.skip("the guard judges the whole suite; run `pytest tests` without -k/-m or file selections")
    problem = missing_parity()
    assert problem is None, problem
