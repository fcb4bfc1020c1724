"""What several test modules share: the command line run as a user runs it, one-line failures,
and the short generation cases checked against transformers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The tiny presets are built with weights that vary greedy runs (typically 5 to 16 distinct tokens
# in 16 steps, see testing/tiny.py), but random weights still give a short cycle here and there
# (2 or 3 tokens, more often on int4 weights). A run of one repeated token fails: a parity check
# that passes on it proves little.
MIN_DISTINCT_TOKENS = 2


def run_cli(*args, timeout=600, env=None) -> subprocess.CompletedProcess:
    """``python builder_qwen3vl.py ARGS`` in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, str(ROOT / "builder_qwen3vl.py"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def assert_clean_failure(proc, out: Path, *needles, code: int = 2) -> None:
    """The command failed with exit ``code``, one line on stderr naming every needle, no
    traceback, and nothing at ``out`` (not even a staging folder)."""
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    last = lines[-1]
    assert last.startswith("error: "), proc.stderr
    assert sum(line.startswith("error") for line in lines) == 1, proc.stderr
    for needle in needles:
        assert needle in last, last
    assert not out.exists()
    assert not list(out.parent.glob(".genai_qwen3vl-staging-*"))


# Short generation cases shared by the precision tests: (messages, pictures as (h, w, seed)).
SHORT_CASES = {
    "text_only": ([{"role": "user", "content": [{"type": "text", "text": "Write a poem."}]}], []),
    "one_image": ([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]}], [(96, 128, 1)]),
    "two_images": (
        [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Compare."}]}],
        [(96, 128, 2), (64, 200, 3)],
    ),
}


def assert_generation_case(cmp, tolerance, what: str) -> None:
    """Generation parity as the precision's tolerance asks, over a varied run of tokens."""
    from genai_qwen3vl.verify.generation import assert_generation_parity

    assert_generation_parity(cmp, tolerance.end_to_end, tolerance.token_steps, what)
    assert cmp.distinct_tokens >= MIN_DISTINCT_TOKENS, f"{what}: only {cmp.distinct_tokens} distinct tokens ({cmp.summary()})"


def check_generation_case(out, hf_reference, case: str, tolerance, record, what: str) -> None:
    """Greedy generation through og (our processor) against ``hf_reference`` on a SHORT_CASES
    case, asserted against ``tolerance``."""
    from PIL import Image

    from genai_qwen3vl.testing.media import make_picture
    from genai_qwen3vl.verify.generation import compare_generations, hf_generate, og_generate

    messages, specs = SHORT_CASES[case]
    images = [make_picture(h, w, s) for h, w, s in specs]
    prompt = hf_reference.processor.apply_chat_template(messages, add_generation_prompt=True)
    ours = og_generate(out, prompt, images, tolerance.token_steps, processor="ours")
    theirs = hf_generate(hf_reference, prompt, [Image.fromarray(x) for x in images], tolerance.token_steps)
    cmp = compare_generations(ours, theirs)
    record(cmp.summary())
    assert_generation_case(cmp, tolerance, what)


def targets(*pairs: str) -> list:
    """pytest params of the precision records for "precision/provider" names, e.g. "fp32/cpu"."""
    import pytest

    from genai_qwen3vl.model.precisions import target

    return [pytest.param(target(*pair.split("/")), id=pair.replace("/", "-")) for pair in pairs]


def check_media_case(out, ref, messages, image_specs, video_specs, processor, tolerance, image_file, record, what: str) -> None:
    """Greedy generation through og against ``ref`` on a conversation with pictures (h, w, seed)
    and videos (frames, h, w, fps): our processor, or og's stock one reading picture files."""
    from PIL import Image

    from genai_qwen3vl.testing.media import make_frames, make_picture
    from genai_qwen3vl.verify.generation import compare_generations, hf_generate, og_generate

    images = [make_picture(h, w, seed) for h, w, seed in image_specs]
    videos = [make_frames(n, h, w) for n, h, w, _ in video_specs]
    fps = [rate for *_, rate in video_specs]
    prompt = ref.processor.apply_chat_template(messages, add_generation_prompt=True)
    given = [image_file(h, w, seed) for h, w, seed in image_specs] if processor == "stock" else images
    ours = og_generate(out, prompt, given, tolerance.token_steps, videos=videos, video_fps=fps, processor=processor)
    theirs = hf_generate(ref, prompt, [Image.fromarray(x) for x in images], tolerance.token_steps, videos=videos, video_fps=fps)
    cmp = compare_generations(ours, theirs)
    record(cmp.summary())
    assert_generation_case(cmp, tolerance, what)
    assert cmp.steps == tolerance.token_steps
