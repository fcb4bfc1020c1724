"""The og worker process under supervision: killed, it is restarted (503 with Retry-After while it
loads, counted in /metrics); one that keeps dying, or cannot load again, ends the server with one
line and exit 2. Each test starts its own server (they kill its worker)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx

from genai_qwen3vl.runtime.serve.app import MAX_RESTARTS
from genai_qwen3vl.testing.server import ServerProcess

from .conftest import PRESET
from .test_load import metric

HELLO = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 2, "temperature": 0}


def worker_pid(server: ServerProcess) -> int:
    """The og worker: the server's child started by multiprocessing's spawn."""
    for pid in server.pids()[1:]:
        if (
            b"multiprocessing.spawn" in Path(f"/proc/{pid}/cmdline").read_bytes()
            and b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()
        ):
            return pid
    raise AssertionError(f"no worker process among {server.pids()}")


def wait_serving(server: ServerProcess, timeout: float = 90) -> list[httpx.Response]:
    """Sends a request until one is answered; the answers on the way."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = httpx.post(f"{server.base_url}/v1/chat/completions", json=HELLO, timeout=60)
        seen.append(r)
        if r.status_code == 200:
            return seen
        time.sleep(0.1)
    raise AssertionError(f"not serving again after {timeout} s: {[r.status_code for r in seen]}\n{server.log()}")


def test_killed_worker_is_restarted(exported, tmp_path):
    with ServerProcess(exported(PRESET), "--max-concurrency", "1", log_dir=tmp_path) as server:
        body = {**HELLO, "max_tokens": 6000, "min_tokens": 6000, "stream": True}
        with httpx.Client(timeout=60) as c, c.stream("POST", f"{server.base_url}/v1/chat/completions", json=body) as r:
            lines = r.iter_lines()
            next(lines)
            old = worker_pid(server)
            os.kill(old, signal.SIGKILL)
            rest = [line for line in lines if line]
        assert rest[-1] == "data: [DONE]" and '"error"' in rest[-2], rest[-2:]  # the stream in flight ends with an error
        seen = wait_serving(server)
        for r in seen[:-1]:
            assert r.status_code == 503 and r.json()["error"]["code"] == "worker_restarting", r.text
            assert int(r.headers["retry-after"]) >= 1
        assert server.proc.poll() is None
        assert worker_pid(server) != old
        assert metric(server.base_url, "genai_qwen3vl_worker_restarts_total") == 1
        assert httpx.get(f"{server.base_url}/health").json()["status"] == "ok"
        assert "the generation worker died (exit code -9); restarting it" in server.log()
        assert "Traceback" not in server.log()
    assert server.proc.returncode == 0


def test_a_worker_that_cannot_load_again_ends_the_server(exported, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    for f in exported(PRESET).iterdir():
        (model / f.name).symlink_to(f)
    server = ServerProcess(model, log_dir=tmp_path).wait_ready()
    try:
        (model / "model.onnx").unlink()  # the next load fails
        os.kill(worker_pid(server), signal.SIGKILL)
        code = server.proc.wait(60)
    finally:
        server.terminate()
    log = server.log_path.read_text()
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert code == 2, log
    assert len(errors) == 1 and "cannot load" in errors[0], log
    assert "Traceback" not in log


def test_a_worker_that_keeps_dying_ends_the_server(exported, tmp_path):
    server = ServerProcess(exported(PRESET), log_dir=tmp_path).wait_ready()
    try:
        for i in range(MAX_RESTARTS):
            os.kill(worker_pid(server), signal.SIGKILL)
            wait_serving(server)
            assert metric(server.base_url, "genai_qwen3vl_worker_restarts_total") == i + 1
        os.kill(worker_pid(server), signal.SIGKILL)  # one death too many
        code = server.proc.wait(60)
    finally:
        server.terminate()
    log = server.log_path.read_text()
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert code == 2, log
    assert len(errors) == 1 and f"{MAX_RESTARTS + 1} times" in errors[0], log
