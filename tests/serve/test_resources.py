"""What one request may cost the server, measured on a real server process on 127.0.0.1 (its
VmHWM, its CPU time, wall-clock times): admission before decoding, media memory bounded by the
slots and --max-request-pixels, videos decoded frame by frame, a hostile chat template stopped by
its budget, --timeout, a disconnect and SIGTERM."""

from __future__ import annotations

import base64
import io
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from genai_qwen3vl.testing.server import ServerProcess

from .conftest import PRESET

MB = 2**20
HOSTILE = "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"
SILENT = "{% set r = range(100000) %}{% for i in r %}{% for j in r %}{% endfor %}{% endfor %}"  # no output: CPU only


def vm(pid: int, key: str) -> int:
    """VmHWM / VmRSS of one process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def png_url(height: int, width: int) -> str:
    """A large, highly compressible PNG (a few hundred KB) as a data URL."""
    from PIL import Image

    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2] = (200, 40, 90)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def image_body(url: str, count: int = 1, **extra) -> dict:
    parts = [{"type": "image_url", "image_url": {"url": url}} for _ in range(count)]
    return {
        "messages": [{"role": "user", "content": [*parts, {"type": "text", "text": "Describe."}]}],
        "max_tokens": 1,
        "temperature": 0,
        **extra,
    }


def post(server: ServerProcess, body: dict, timeout: float = 120) -> httpx.Response:
    return httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=timeout)


@pytest.fixture(scope="module")
def big_png() -> str:
    return png_url(6000, 6000)  # 36 Mpixel: ~108 MB as RGB


class Busy:
    """Holds the only generation slot with a long stream until closed."""

    def __init__(self, server: ServerProcess):
        body = {
            "messages": [{"role": "user", "content": "Write a poem."}],
            "max_tokens": 6000,
            "min_tokens": 6000,
            "temperature": 0,
            "stream": True,
        }
        self.client = httpx.Client(timeout=120)
        self.context = self.client.stream("POST", f"{server.base_url}/v1/chat/completions", json=body)
        response = self.context.__enter__()
        self.lines = response.iter_lines()
        self.first = next(self.lines)  # the generation has started: the slot is taken

    def close(self) -> None:
        self.context.__exit__(None, None, None)
        self.client.close()


def test_full_queue_refuses_an_image_before_decoding_it(exported, tmp_path, big_png):
    with ServerProcess(exported(PRESET), "--max-concurrency", "1", "--max-queue", "0", log_dir=tmp_path) as server:
        busy = Busy(server)
        try:
            before = vm(server.proc.pid, "VmHWM")
            start = time.monotonic()
            r = post(server, image_body(big_png))
            elapsed = time.monotonic() - start
        finally:
            busy.close()
        grown = vm(server.proc.pid, "VmHWM") - before
        assert r.status_code == 429, r.text
        assert elapsed < 1.0 and grown < 40 * MB, f"429 after {elapsed:.2f} s, VmHWM +{grown / MB:.0f} MiB (the image was decoded first)"


def test_concurrent_images_are_decoded_one_slot_at_a_time(exported, tmp_path, big_png):
    """Four 6000x6000 PNGs at once against one slot: the peak is one image's, not four."""
    with ServerProcess(exported(PRESET), "--max-concurrency", "1", "--max-queue", "8", log_dir=tmp_path) as server:
        base = vm(server.proc.pid, "VmHWM")
        assert post(server, image_body(big_png)).status_code == 200
        one = vm(server.proc.pid, "VmHWM") - base
        results: list[httpx.Response] = []
        threads = [threading.Thread(target=lambda: results.append(post(server, image_body(big_png)))) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert [r.status_code for r in results] == [200] * 4, [r.text for r in results]
        four = vm(server.proc.pid, "VmHWM") - base
        assert one > 60 * MB  # the measure sees a decode at all
        assert four < one + 0.5 * one, f"one image: +{one / MB:.0f} MiB, four at once: +{four / MB:.0f} MiB"


def test_max_request_pixels_refuses_before_decoding(exported, tmp_path, big_png):
    with ServerProcess(exported(PRESET), "--max-request-pixels", str(50_000_000), log_dir=tmp_path) as server:
        before = vm(server.proc.pid, "VmHWM")
        r = post(server, image_body(big_png, count=2))  # 72 Mpixel
        assert r.status_code == 400 and r.json()["error"]["code"] == "media_too_large", r.text
        assert "--max-request-pixels" in r.json()["error"]["message"]
        assert vm(server.proc.pid, "VmHWM") - before < 40 * MB
        assert post(server, image_body(big_png)).status_code == 200  # one fits


@pytest.mark.slow
def test_a_long_video_is_decoded_frame_by_frame(exported, tmp_path):
    """300 frames of 640x480 all sampled (fps 30 = the video's): held as decoded they are 276 MB
    (and twice that while stacked); resized as they come they are a few MB."""
    from genai_qwen3vl.testing.media import write_video

    frames = np.zeros((300, 480, 640, 3), np.uint8)
    frames[:, :, :320] = 180
    frames[:, np.arange(480) % 7 == 0] = 30
    path = write_video(tmp_path / "long.mp4", frames, fps=30)
    del frames
    url = "data:video/mp4;base64," + base64.b64encode(path.read_bytes()).decode()
    body = {
        "messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": "What?"}]}],
        "max_tokens": 1,
        "temperature": 0,
        "mm_processor_kwargs": {"fps": 30},
    }
    with ServerProcess(exported(PRESET), log_dir=tmp_path) as server:
        before = vm(server.proc.pid, "VmHWM")
        r = post(server, body, timeout=300)
        grown = vm(server.proc.pid, "VmHWM") - before
        assert r.status_code in (200, 400), r.text  # 400: the 150 frame groups may not fit the tiny context
        assert r.status_code == 200 or r.json()["error"]["code"] == "context_length_exceeded", r.text
        assert grown < 120 * MB, f"VmHWM +{grown / MB:.0f} MiB for one video"


@pytest.fixture(scope="module")
def hostile_model(exported, tmp_path_factory):
    """The tiny export with a chat template that runs for ever (10^10 loop steps)."""
    return _with_template(exported(PRESET), tmp_path_factory.mktemp("hostile") / "model", HOSTILE)


@pytest.fixture(scope="module")
def silent_model(exported, tmp_path_factory):
    return _with_template(exported(PRESET), tmp_path_factory.mktemp("silent") / "model", SILENT)


def _with_template(source: Path, out: Path, template: str) -> Path:
    out.mkdir(parents=True)
    for f in source.iterdir():
        if f.name not in ("chat_template.jinja", "chat_template.json"):
            (out / f.name).symlink_to(f)
    (out / "chat_template.jinja").write_text(template)
    return out


HELLO = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 2}


@pytest.mark.parametrize("which", ["hostile", "silent"])
def test_hostile_chat_template_is_stopped_by_its_budget(which, hostile_model, silent_model, tmp_path):
    with ServerProcess(hostile_model if which == "hostile" else silent_model, "--timeout", "30", log_dir=tmp_path) as server:
        before = vm(server.proc.pid, "VmHWM")
        start = time.monotonic()
        r = post(server, HELLO, timeout=40)
        elapsed = time.monotonic() - start
        assert r.status_code == 400 and r.json()["error"]["code"] == "chat_template_error", r.text
        assert "chat template" in r.json()["error"]["message"]
        assert elapsed < 10, f"the template ran {elapsed:.1f} s"
        assert vm(server.proc.pid, "VmHWM") - before < 100 * MB
        assert httpx.get(f"{server.base_url}/health").json()["running"] == 0  # the slot is free again
        assert "Traceback" not in server.log()


def test_timeout_stops_a_hostile_template(silent_model, tmp_path):
    with ServerProcess(silent_model, "--timeout", "1", log_dir=tmp_path) as server:
        start = time.monotonic()
        r = post(server, HELLO, timeout=40)
        assert r.status_code == 408 and r.json()["error"]["code"] == "timeout", r.text
        assert time.monotonic() - start < 3


def test_disconnect_stops_a_hostile_template(silent_model, tmp_path):
    with ServerProcess(silent_model, "--timeout", "60", log_dir=tmp_path) as server:
        with pytest.raises(httpx.ReadTimeout):
            post(server, HELLO, timeout=0.5)
        time.sleep(0.5)
        cpu = cpu_seconds(server.proc.pid)
        time.sleep(1.5)
        spent = cpu_seconds(server.proc.pid) - cpu
        assert spent < 0.3, f"the server spent {spent:.2f} CPU-s after the client left"


def test_sigterm_ends_the_server_during_a_hostile_template(silent_model, tmp_path):
    server = ServerProcess(silent_model, "--timeout", "600", log_dir=tmp_path).wait_ready()
    thread = threading.Thread(target=lambda: httpx.post(f"{server.base_url}/v1/chat/completions", json=HELLO, timeout=60))
    thread.start()
    time.sleep(1.0)
    server.proc.send_signal(signal.SIGTERM)
    start = time.monotonic()
    try:
        code = server.proc.wait(15)
    except Exception:
        server.proc.kill()
        raise
    finally:
        thread.join(30)
    assert code == 0 and time.monotonic() - start < 10


TEMPLATE_ATTACKS = {
    "output": HOSTILE,
    "silent_loops": SILENT,
    "repeat": "{{ 'x' * 10**10 }}",
    "power": "{% set n = 7 %}{{ n ** 100000000 }}",
    "method": "{{ 'x'.ljust(10**10) }}",
    "filter": "{{ 'x'|center(10**10) }}",
    "doubling": "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s|length }}",
    "tojson_indent": "{{ [1, 2, 3]|tojson(indent=30000000)|length }}",
    "tojson_nested": "{% set ns = namespace(x=1) %}{% for i in range(23) %}{% set ns.x = [ns.x, ns.x] %}{% endfor %}"
    "{{ ns.x|tojson|length }}",
    "power_tower": "{{ ((2**4096)**4096)**4096 > 1 }}",
    "int_product": "{% set ns = namespace(n=3) %}{% for i in range(21) %}{% set ns.n = ns.n * ns.n %}{% endfor %}"
    "{{ ns.n * ns.n * ns.n * ns.n * ns.n * ns.n * ns.n > 1 }}",
    "printf_width": "{{ ('%99999999d' % 1)|length }}",
    "format_width": "{{ '{:>99999999}'.format(1)|length }}",
    "format_filter": "{{ '%99999999d'|format(1)|length }}",
}


@pytest.mark.parametrize("attack", sorted(TEMPLATE_ATTACKS))
def test_template_limits_stop_each_attack(attack):
    """In process: each way a template could spend unbounded time or memory in one step is stopped
    (the server's budget: TemplateLimits); the render's own peak allocation (tracemalloc, not the
    process's high-water mark, which earlier tests already raised) stays far below what any of
    these builds unbounded (each would allocate 90 MB or more)."""
    import tracemalloc

    from genai_qwen3vl.runtime.chat_template import TemplateLimitError, TemplateLimits, render_chat_template

    tracemalloc.start()
    try:
        start = time.monotonic()
        with pytest.raises(TemplateLimitError):
            render_chat_template(TEMPLATE_ATTACKS[attack], [], True, TemplateLimits(seconds=1.0, max_chars=1 << 20))
        elapsed = time.monotonic() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 3
    assert peak < 40 * MB, f"the render allocated {peak / MB:.0f} MB at its peak"


def test_template_limits_leave_a_real_template_alone():
    from genai_qwen3vl.runtime.chat_template import TemplateLimits, render_chat_template
    from genai_qwen3vl.testing.tiny import CHAT_TEMPLATES

    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]}]
    for template in CHAT_TEMPLATES.values():
        assert render_chat_template(template, messages, True, TemplateLimits()) == render_chat_template(template, messages, True)


def test_video_frames_resized_as_decoded_equal_resizing_after(tmp_path):
    """decode_video_file(..., settings) resizes each frame as it comes; the pixel rows equal
    resizing the stacked frames afterwards (transformers' order), for several samplings."""
    from genai_qwen3vl.model.processor_settings import FrameSampling, video_settings
    from genai_qwen3vl.runtime.video import decode_video_file, preprocess_video
    from genai_qwen3vl.testing.media import make_frames, write_video

    path = write_video(tmp_path / "v.mp4", make_frames(20, 120, 176, 3), fps=10)
    settings = video_settings(
        {"size": {"longest_edge": 1024 * 160, "shortest_edge": 1024 * 6}, "patch_size": 16, "temporal_patch_size": 2, "merge_size": 2}
    )
    for sampling in (FrameSampling(), FrameSampling(fps=5.0), FrameSampling(num_frames=7, fps=None)):
        after = preprocess_video(decode_video_file(path, sampling), settings, sampling)
        during = decode_video_file(path, sampling, settings)
        assert during.resized and during.frames.shape[1:3] != (120, 176)
        rows = preprocess_video(during, settings, sampling)
        assert rows[1] == after[1] and np.array_equal(rows[0], after[0])
