"""Session fixtures: tiny random Qwen3-VL checkpoints (seeded, awkward dimensions), their exports
through the real command line, transformers references, the scripted checkpoint and its export,
and generated pictures; the markers;
the record of which parity tests passed, which the guard test (run last) reads."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest

from genai_qwen3vl.model.precisions import Target
from genai_qwen3vl.testing.media import make_picture
from genai_qwen3vl.testing.tiny import MOE_PRESETS, PRESETS, make_scripted_checkpoint, make_tiny_checkpoint

# Presets every CPU parity test runs on (see genai_qwen3vl/testing/tiny.py for their dimensions).
ALL_PRESETS = tuple(PRESETS)
# Qwen3-VL-MoE presets: tests/verify/test_moe.py checks every artifact of both CPU targets on each
MOE_PRESET_NAMES = tuple(MOE_PRESETS)

_PARITY_RESULTS: list[tuple[str, str]] = []
# (artifact, target flags, preset) of every parity test that passed in this session
PASSED_PARITY: set[tuple[str, tuple[str, ...], str]] = set()
GUARD_TEST = "test_every_artifact_target_and_preset_has_a_passing_parity_test"


@pytest.fixture
def record_parity(request):
    """Tests hand their measured differences here; the summary prints them all at the end."""

    def record(report):
        text = report if isinstance(report, str) else ", ".join(f"{k} {v:.2e}" for k, v in report.items())
        _PARITY_RESULTS.append((request.node.name, text))

    return record


def pytest_terminal_summary(terminalreporter):
    if _PARITY_RESULTS:
        terminalreporter.section("measured parity against transformers (max |diff|)")
        for name, text in _PARITY_RESULTS:
            terminalreporter.write_line(f"{name}: {text}")


def cuda_available() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def pytest_configure(config):
    config.addinivalue_line("markers", "parity(artifact): a parity test of one artifact against transformers (params: target, preset)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")
    config.addinivalue_line("markers", "cuda: needs onnxruntime's CUDA provider and a CUDA device (skipped where there is none)")
    config.addinivalue_line(
        "markers",
        "og_behaviour(version, what): documents what onnxruntime-genai `version` does (often a bug); "
        "fails, with that note, once og changes it",
    )


def pytest_collection_modifyitems(config, items):
    skip_cuda = None if cuda_available() else pytest.mark.skip(reason="needs onnxruntime's CUDA provider and a CUDA device")
    for item in items:
        if skip_cuda is not None and "cuda" in item.keywords:
            item.add_marker(skip_cuda)
    # the guard reads what the other tests did: it runs last
    items.sort(key=lambda item: item.name == GUARD_TEST)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when != "call":
        return
    if report.passed:
        params = getattr(item, "callspec", None)
        params = params.params if params else {}
        target = params.get("target")
        on_device = item.get_closest_marker("cuda") is not None
        for mark in item.iter_markers("parity"):
            artifact = mark.kwargs["artifact"]
            # counts only where the artifact really ran (a bf16 decoder does not on a CPU)
            if isinstance(target, Target) and (on_device or artifact in target.cpu_checkable):
                PASSED_PARITY.add((artifact, target.flags, params.get("preset", "(any)")))
    elif report.failed:
        for mark in item.iter_markers("og_behaviour"):
            report.sections.append(
                (
                    "onnxruntime-genai behaviour",
                    f"This test documents onnxruntime-genai {mark.kwargs['version']}: {mark.kwargs['what']}. "
                    "If og changed it, update the README's known limits and this test.",
                )
            )


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """preset name -> checkpoint folder (built on first use)."""
    cache: dict[str, Path] = {}

    def get(preset: str) -> Path:
        if preset not in cache:
            cache[preset] = make_tiny_checkpoint(tmp_path_factory.mktemp(f"ckpt_{preset}"), preset, seed=1234)
        return cache[preset]

    return get


@pytest.fixture(scope="session")
def exported(tmp_path_factory, checkpoints):
    """(preset, command-line flags) -> output folder written by the command line (default -p fp32 -e cpu)."""
    from genai_qwen3vl.cli import export_main

    cache: dict[tuple, Path] = {}

    def get(preset: str, *flags: str) -> Path:
        flags = flags or ("-p", "fp32", "-e", "cpu")
        key = (preset, flags)
        if key not in cache:
            out = tmp_path_factory.mktemp(f"out_{preset}") / "model"
            rc = export_main(["-i", str(checkpoints(preset)), "-o", str(out), *flags])
            assert rc == 0, f"export of {preset} {' '.join(flags)} failed with exit code {rc}"
            cache[key] = out
        return cache[key]

    return get


class Scripted(NamedTuple):
    checkpoint: Path  # make_scripted_checkpoint's folder
    exported: Path  # its export by the command line, -p fp32 -e cpu


@pytest.fixture(scope="session")
def scripted_checkpoint(tmp_path_factory) -> Path:
    """The scripted checkpoint (genai_qwen3vl.testing.tiny.make_scripted_checkpoint): greedy after
    the Thinking generation prompt it writes SCRIPTED_OUTPUT, then <|im_end|>."""
    return make_scripted_checkpoint(tmp_path_factory.mktemp("ckpt_scripted"), seed=0)


@pytest.fixture(scope="session")
def scripted(tmp_path_factory, scripted_checkpoint) -> Scripted:
    """(checkpoint, exported): the scripted checkpoint and its fp32 CPU export, built once per session."""
    from genai_qwen3vl.cli import export_main

    out = tmp_path_factory.mktemp("out_scripted") / "model"
    rc = export_main(["-i", str(scripted_checkpoint), "-o", str(out), "-p", "fp32", "-e", "cpu"])
    assert rc == 0, f"export of the scripted checkpoint failed with exit code {rc}"
    return Scripted(scripted_checkpoint, out)


@pytest.fixture(scope="session")
def reference(checkpoints):
    """preset name -> transformers Reference (model fp32 eager, PIL image processor)."""
    from genai_qwen3vl.verify.reference import Reference

    cache: dict = {}

    def get(preset: str):
        if preset not in cache:
            cache[preset] = Reference.load(checkpoints(preset))
        return cache[preset]

    return get


@pytest.fixture(scope="session")
def image_file(tmp_path_factory):
    """(height, width, seed) -> PNG path of ``make_picture``."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")

    def get(height: int, width: int, seed: int = 0) -> Path:
        path = folder / f"pic_{height}x{width}_{seed}.png"
        if not path.exists():
            Image.fromarray(make_picture(height, width, seed)).save(path)
        return path

    return get
