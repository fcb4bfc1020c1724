"""The README's examples run as written against the demo's kind of folder (a tiny export) and a
real server on 127.0.0.1: the openai client example, the curl example, the chat command lines
and the serve command line. Only the names of the files they point at (the folder, the picture,
the video) and the port are substituted; an example that stops working fails here."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from genai_qwen3vl.testing.media import make_frames, write_video
from genai_qwen3vl.testing.server import free_port

from ..helpers import ROOT
from .conftest import PRESET

README = (ROOT / "README.md").read_text()
BIN = Path(sys.executable).parent  # genai-qwen3vl, as installed beside this python


def _blocks(language: str, needle: str) -> list[str]:
    found = [b for b in re.findall(rf"```{language}\n(.*?)```", README, re.S) if needle in b]
    assert found, f"no ```{language} block in the README contains {needle!r}"
    return found


def _env() -> dict:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}


def _point_at(text: str, served, picture: Path, model_dir: Path) -> str:
    return (
        text.replace("http://127.0.0.1:8000", served.base_url)
        .replace('model="qwen3vl-2b-cpu"', f'model="{model_dir.name}"')
        .replace('"cat.jpg"', json.dumps(str(picture)))
        .replace("picture.png", str(picture))
    )


def test_the_openai_client_example_runs(served, exported, image_file, tmp_path):
    (example,) = _blocks("python", "from openai import OpenAI")
    code = _point_at(example, served, image_file(96, 128, 1), exported(PRESET))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip(), "the example printed no answer"


def test_the_structured_output_example_runs(served, exported, image_file, tmp_path):
    """The parse example, after the client example it continues (its client and image)."""
    (client,) = _blocks("python", "from openai import OpenAI")
    (example,) = _blocks("python", "chat.completions.parse(")
    code = _point_at(client + "\n" + example, served, image_file(96, 128, 1), exported(PRESET))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]  # the client example's answer ends without a newline
    assert re.search(r"shop=.* total=[0-9.e+-]+ currency='(EUR|USD|GBP)'$", last, re.S), last


def test_the_curl_example_runs(served, exported, image_file, tmp_path):
    (example,) = _blocks("bash", "curl http://127.0.0.1:8000/v1/chat/completions")
    proc = subprocess.run(
        ["bash", "-c", _point_at(example, served, image_file(96, 128, 1), exported(PRESET))],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["choices"][0]["message"]["content"], proc.stdout


@pytest.mark.slow
def test_the_chat_command_lines_run(exported, tmp_path):
    (block,) = _blocks("bash", "genai-qwen3vl chat qwen3vl-2b-cpu")
    lines = [line.split("#")[0].strip() for line in block.splitlines() if line.startswith("genai-qwen3vl chat")]
    assert len(lines) == 3, lines
    write_video(tmp_path / "clip.mp4", make_frames(6, 64, 96), fps=4)
    for line in lines:
        command = line.replace("qwen3vl-2b-cpu", str(exported(PRESET)))
        # interactive ones: no image (no video: the stock processor does not ask), one turn, then an empty prompt
        turn = "\nHello\n\n\n" if "--processor stock" in line else "\n\nHello\n\n\n\n"
        proc = subprocess.run(["bash", "-c", command], input=turn, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=_env())
        assert proc.returncode == 0 and "Assistant: " in proc.stdout, (line, proc.stdout[-500:], proc.stderr)
        assert "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.slow
def test_the_serve_command_line_runs(exported, tmp_path):
    (block,) = _blocks("bash", "genai-qwen3vl serve qwen3vl-2b-cpu")
    (line,) = [line.split("#")[0].strip() for line in block.splitlines() if line.startswith("genai-qwen3vl serve")]
    port = free_port()
    command = line.replace("qwen3vl-2b-cpu", str(exported(PRESET))) + f" --port {port}"
    server = subprocess.Popen(
        ["bash", "-c", f"exec {command}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=_env()
    )
    try:
        deadline, status = time.monotonic() + 180, None
        while time.monotonic() < deadline and server.poll() is None and status != "ok":
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    status = json.loads(r.read())["status"]
            except OSError:
                time.sleep(0.3)
        assert status == "ok", server.stderr.read() if server.poll() is not None else "not ready in 180 s"
    finally:
        server.terminate()
        server.wait(60)
