"""``genai-qwen3vl serve`` as a user starts it: help, and folders it cannot serve refused in one
line with exit code 2 (before or while loading), never a traceback."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from genai_qwen3vl.testing.server import free_port

from .conftest import PRESET


def _serve(*args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "genai_qwen3vl.cli", "serve", *map(str, args), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _one_line_error(proc, *needles) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


def test_help_names_the_endpoints_and_flags():
    proc = subprocess.run([sys.executable, "-m", "genai_qwen3vl.cli", "serve", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for word in (
        "/v1/chat/completions",
        "--max-concurrency",
        "--max-queue",
        "--api-key",
        "GENAI_QWEN3VL_API_KEY",
        "--allowed-media-dir",
        "--timeout",
        "usage: genai-qwen3vl serve",
    ):
        assert word in proc.stdout, word


def test_a_missing_folder(tmp_path):
    _one_line_error(_serve(tmp_path / "nothing"), "does not exist", "builder_qwen3vl.py")


def test_a_folder_that_is_not_an_export(tmp_path):
    _one_line_error(_serve(tmp_path), "no genai_config.json")


def test_an_export_og_cannot_load_stops_the_server(exported, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(exported(PRESET), broken)
    (broken / "model.onnx").unlink()
    _one_line_error(_serve(broken), "cannot serve", "model.onnx")


@pytest.mark.parametrize(
    "flags,needle",
    [
        (["--max-model-len", "10000000"], "context"),
        (["--max-image-pixels", "1000000000000"], "checkpoint's limit"),
        (["--allowed-media-dir", "/nonexistent-dir"], "not a folder"),
    ],
)
def test_bad_options(exported, flags, needle):
    _one_line_error(_serve(exported(PRESET), *flags), needle)


@pytest.mark.parametrize(
    "flags,needle",
    [
        (["--port", "99999"], "--port"),
        (["--port", "-1"], "--port"),
        (["--timeout", "nan"], "--timeout"),
        (["--timeout", "inf"], "--timeout"),
        (["--max-queue", "-1"], "--max-queue"),
        (["--limit-images", "-1"], "--limit-images"),
        (["--limit-videos", "two"], "--limit-videos"),
        (["--header-timeout", "0"], "--header-timeout"),
        (["--body-timeout", "-5"], "--body-timeout"),
        (["--keep-alive-timeout", "1e999"], "--keep-alive-timeout"),
    ],
)
def test_bad_flag_values_are_refused_when_parsed(exported, flags, needle):
    """Out-of-range flag values (--port 99999, --timeout nan or inf): argparse refuses them in one
    line, exit 2, nothing loaded."""
    proc = subprocess.run(
        [sys.executable, "-m", "genai_qwen3vl.cli", "serve", str(exported(PRESET)), *flags], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "loaded" not in proc.stderr + proc.stdout, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and f"argument {needle}" in errors[0], proc.stderr
    assert len(proc.stderr.splitlines()) == 2, proc.stderr  # argparse's one-line usage, then the error


@pytest.mark.parametrize("where", ["port_in_use", "address_not_here"])
def test_an_address_it_cannot_listen_on_is_one_line_before_loading(exported, where):
    """The address is bound before the model loads: a port in use or an unknown host is one line,
    exit 3 (the documented code), and the model is never loaded."""
    import socket
    import time

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        host = "127.0.0.1" if where == "port_in_use" else "192.0.2.1"  # TEST-NET-1: no machine's address
        start = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "genai_qwen3vl.cli", "serve", str(exported(PRESET)), "--host", host, "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        seconds = time.monotonic() - start
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "loaded" not in proc.stderr + proc.stdout, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert f"cannot listen on {host} port {port}" in errors[0], errors[0]
    assert ("in use" if where == "port_in_use" else "assign") in errors[0], errors[0]
    assert seconds < 20, f"{seconds:.1f} s: the model was loaded before the address was checked"
