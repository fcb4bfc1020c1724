"""Session fixtures: tiny random Qwen3-VL checkpoints (seeded, awkward dimensions), their
exports through the real command line, transformers references, and generated pictures."""

from __future__ import annotations

from pathlib import Path

import pytest

from genai_qwen3vl.tiny import PRESETS, make_picture, make_tiny_checkpoint

# Presets every parity test runs on (see genai_qwen3vl/tiny.py for their dimensions).
ALL_PRESETS = tuple(PRESETS)


_PARITY_RESULTS: list[tuple[str, str]] = []


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


def pytest_configure(config):
    config.addinivalue_line("markers", "parity(artifact): a parity test of one artifact against transformers")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")
    config.addinivalue_line("markers", "cuda: needs a CUDA device (skipped where there is none)")


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
    from genai_qwen3vl.cli import main

    cache: dict[tuple, Path] = {}

    def get(preset: str, *flags: str) -> Path:
        flags = flags or ("-p", "fp32", "-e", "cpu")
        key = (preset, flags)
        if key not in cache:
            out = tmp_path_factory.mktemp(f"out_{preset}") / "model"
            rc = main(["-i", str(checkpoints(preset)), "-o", str(out), *flags])
            assert rc == 0, f"export of {preset} {' '.join(flags)} failed with exit code {rc}"
            cache[key] = out
        return cache[key]

    return get


@pytest.fixture(scope="session")
def reference(checkpoints):
    """preset name -> transformers Reference (model fp32 eager, PIL image processor)."""
    from genai_qwen3vl.parity import Reference

    cache: dict = {}

    def get(preset: str):
        if preset not in cache:
            cache[preset] = Reference.load(checkpoints(preset))
        return cache[preset]

    return get


@pytest.fixture(scope="session")
def image_file(tmp_path_factory):
    """(height, width, seed) -> PNG path of ``picture``."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")

    def get(height: int, width: int, seed: int = 0) -> Path:
        path = folder / f"pic_{height}x{width}_{seed}.png"
        if not path.exists():
            Image.fromarray(make_picture(height, width, seed)).save(path)
        return path

    return get


# Short generation cases shared by the precision tests: (messages, pictures as (h, w, seed)).
SHORT_CASES = {
    "text_only": ([{"role": "user", "content": [{"type": "text", "text": "Write a poem."}]}], []),
    "one_image": ([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]}], [(96, 128, 1)]),
    "two_images": (
        [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Compare."}]}],
        [(96, 128, 2), (64, 200, 3)],
    ),
}


def check_generation_case(out, hf_reference, case: str, precision: str, record, what: str) -> None:
    """Greedy generation through og (our processor) against ``hf_reference`` on a SHORT_CASES
    case, asserted against the precision's tolerances."""
    from PIL import Image

    from genai_qwen3vl.parity import assert_generation_parity, compare_generations, hf_generate, og_generate
    from genai_qwen3vl.tolerances import tolerance

    messages, specs = SHORT_CASES[case]
    images = [make_picture(h, w, s) for h, w, s in specs]
    prompt = hf_reference.processor.apply_chat_template(messages, add_generation_prompt=True)
    tol = tolerance(precision)
    ours = og_generate(out, prompt, images, tol.token_steps, processor="ours")
    theirs = hf_generate(hf_reference, prompt, [Image.fromarray(x) for x in images], tol.token_steps)
    cmp = compare_generations(ours, theirs)
    record(cmp.summary())
    assert_generation_parity(cmp, tol.end_to_end, tol.token_steps, what)
