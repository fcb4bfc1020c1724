"""The og worker process under supervision: killed, it is restarted (503 with Retry-After while it
loads, counted in /metrics); one that keeps dying, or cannot load again, ends the server with one
line and exit 2. Each test starts its own server (they kill its worker)."""

from __future__ import annotations

import os
import resource
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


def linked_model(source: Path, tmp_path: Path) -> Path:
    """A model folder of symlinks to ``source``'s files, for a test to break."""
    model = tmp_path / "model"
    model.mkdir()
    for f in source.iterdir():
        (model / f.name).symlink_to(f)
    return model


def last_kill_ends_the_server(model: Path, tmp_path: Path, prepare=lambda server: None, env: dict | None = None) -> str:
    """Starts a server on ``model``, runs ``prepare(server)``, kills its worker and waits for the
    server to end: exit 2, one ``error:`` line (returned) and no traceback."""
    server = ServerProcess(model, log_dir=tmp_path, env=env).wait_ready()
    try:
        prepare(server)
        os.kill(worker_pid(server), signal.SIGKILL)
        code = server.proc.wait(60)
    finally:
        server.terminate()
    log = server.log_path.read_text()
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert code == 2, log
    assert len(errors) == 1, log
    assert "Traceback" not in log, log
    return errors[0]


def test_a_worker_that_cannot_load_again_ends_the_server(exported, tmp_path):
    model = linked_model(exported(PRESET), tmp_path)
    error = last_kill_ends_the_server(model, tmp_path, lambda server: (model / "model.onnx").unlink())  # the next load fails
    assert "cannot load" in error


def test_a_worker_that_keeps_dying_ends_the_server(exported, tmp_path):
    def die_until_the_last(server):
        for i in range(MAX_RESTARTS):
            os.kill(worker_pid(server), signal.SIGKILL)
            wait_serving(server)
            assert metric(server.base_url, "genai_qwen3vl_worker_restarts_total") == i + 1

    error = last_kill_ends_the_server(exported(PRESET), tmp_path, die_until_the_last)  # then one death too many
    assert f"{MAX_RESTARTS + 1} times" in error


def test_a_worker_that_cannot_be_started_again_ends_the_server(exported, tmp_path):
    """Starting the new worker fails with OSError (here: no file descriptor left, as after an
    out-of-memory kill the process table or memory may be): one line and exit 2, not a traceback
    on the reader thread and 503 forever."""

    def no_descriptor_left(server):
        fds = {int(fd) for fd in os.listdir(f"/proc/{server.proc.pid}/fd")}
        lowest_free = min(set(range(len(fds) + 1)) - fds)
        hard = resource.prlimit(server.proc.pid, resource.RLIMIT_NOFILE)[1]
        resource.prlimit(server.proc.pid, resource.RLIMIT_NOFILE, (lowest_free, hard))

    error = last_kill_ends_the_server(exported(PRESET), tmp_path, no_descriptor_left)
    assert "a new one cannot be started" in error


def test_a_worker_that_hangs_while_loading_ends_the_server(exported, tmp_path):
    """A new worker whose load never finishes (model.onnx a FIFO nobody writes: og's open blocks)
    is killed after the load timeout and the server ends, instead of 503 forever."""
    model = linked_model(exported(PRESET), tmp_path)

    def a_file_that_never_reads(server):
        (model / "model.onnx").unlink()
        os.mkfifo(model / "model.onnx")

    error = last_kill_ends_the_server(model, tmp_path, a_file_that_never_reads, env={"GENAI_QWEN3VL_WORKER_LOAD_TIMEOUT": "3"})
    assert "did not load the model within 3 s" in error
