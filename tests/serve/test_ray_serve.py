"""``genai-qwen3vl serve --ray-replicas N``: the server's app as a Ray Serve deployment on a real
local Ray cluster (started by the command, on 127.0.0.1): requests spread over two replicas, each
answer and each /health and /metrics naming its replica; a replica killed by pid, the requests after
it answered and the replica replaced; SIGTERM (to the command, or to its whole process group as a
terminal's Ctrl-C or ``timeout`` sends it) ends everything with exit 0; bad flag values one line."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from genai_qwen3vl.testing.server import ServerProcess

from .conftest import PRESET

pytest.importorskip("ray.serve", reason="the Ray Serve tests need the [ray] extra: pip install 'genai-qwen3vl[ray]'")

READY_S = 300  # a local cluster, then each replica's model (about 25 s on an idle 2-core machine)
HELLO = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 3, "temperature": 0}


def _ray_env(tmp: Path) -> dict:
    # short: Ray's socket paths must fit 107 bytes
    return {"RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": str(tmp)}


@pytest.fixture
def ray_tmp():
    path = Path(f"/tmp/gq-rs-{os.getpid()}-{time.monotonic_ns() % 10**6}")
    path.mkdir()
    yield path
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _replica_pids(server: ServerProcess) -> list[int]:
    """The replicas' worker processes (titled ray::ServeReplica:genai-qwen3vl:Qwen3VLServer)."""
    found = []
    for pid in server.pids():
        try:
            if b"ServeReplica:genai-qwen3vl:Qwen3VLServer" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except FileNotFoundError:
            pass
    return found


def _alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def _ask(base_url: str) -> str:
    """One chat completion through the openai client (no retries); the replica that answered."""
    import openai

    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="none", max_retries=0, timeout=120)
    raw = client.chat.completions.with_raw_response.create(model="model", **HELLO)
    answer = raw.parse()
    assert answer.choices[0].message.content is not None and answer.usage.completion_tokens >= 1
    return raw.headers["x-replica"]


def _wait_for_replicas(server: ServerProcess, count: int, timeout: float = READY_S, new: set[str] = frozenset()) -> set[str]:
    """Polls /health until ``count`` different replicas (not in ``new``) have answered ok; their ids."""
    seen, deadline = set(), time.monotonic() + timeout
    while len(seen) < count:
        assert time.monotonic() < deadline, f"{len(seen)} of {count} replicas answered /health:\n{server.log()[-3000:]}"
        assert server.proc.poll() is None, server.log()
        try:
            r = httpx.get(f"{server.base_url}/health", timeout=10)
            if r.status_code == 200 and r.json()["status"] == "ok":
                assert r.json()["replica"] == r.headers["x-replica"]
                seen.add(r.headers["x-replica"])
                seen -= new
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return seen


def _ends_cleanly(server: ServerProcess, pids: list[int], stop) -> None:
    """``stop()`` ends the command with exit 0 within a minute, and every process it had with it."""
    stop()
    try:
        code = server.proc.wait(90)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        raise AssertionError(f"still running 90 s after the signal:\n{server.log()[-3000:]}") from None
    assert code == 0, server.log()[-3000:]
    deadline = time.monotonic() + 30
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = _alive(pids)
    assert not left, [Path(f"/proc/{p}/cmdline").read_bytes()[:80] for p in left]
    assert "Traceback" not in server.log(), server.log()[-3000:]


def test_two_replicas_share_the_requests_and_survive_one_killed(exported, tmp_path, ray_tmp):
    flags = ("--ray-replicas", "2", "--ray-cpus-per-replica", "1", "--max-concurrency", "1", "--max-queue", "4")
    server = ServerProcess(exported(PRESET), *flags, log_dir=tmp_path, env=_ray_env(ray_tmp))
    try:
        first = _wait_for_replicas(server, 2)
        # requests spread over both (8 at once: each replica takes one and queues the rest)
        with ThreadPoolExecutor(8) as pool:
            answered = list(pool.map(lambda _: _ask(server.base_url), range(8)))
        assert set(answered) == first, answered
        assert "with 2 Ray Serve replica(s)" in server.log()
        # /metrics is the replica's own registry, named by the header
        metrics = {}
        for _ in range(40):
            r = httpx.get(f"{server.base_url}/metrics", timeout=10)
            assert r.status_code == 200
            metrics[r.headers["x-replica"]] = r.text
        assert set(metrics) == first
        pattern = re.compile(r'^genai_qwen3vl_requests_total\{[^}]*status="200"[^}]*\} ([0-9.]+)$', re.M)
        served = [float(m) for text in metrics.values() for m in pattern.findall(text)]
        assert sum(served) >= 8, metrics

        victims = _replica_pids(server)
        assert len(victims) == 2, victims
        os.kill(victims[0], signal.SIGKILL)
        time.sleep(1)
        after = [_ask(server.base_url) for _ in range(10)]  # each answered: a failure raises
        assert len(set(after)) >= 1
        # Ray Serve replaces the dead replica
        _wait_for_replicas(server, 1, timeout=180, new=first)
        assert len(_alive(_replica_pids(server))) == 2
        pids = server.pids()
        _ends_cleanly(server, pids, lambda: server.proc.send_signal(signal.SIGTERM))
    finally:
        server.terminate()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_the_whole_process_group_ends_the_command_and_its_cluster(exported, tmp_path, ray_tmp, sig):
    """As `timeout` (SIGTERM) or a terminal's Ctrl-C (SIGINT) sends it: the local cluster's processes get it too."""
    server = ServerProcess(exported(PRESET), "--ray-replicas", "1", log_dir=tmp_path, env=_ray_env(ray_tmp), new_session=True)
    try:
        _wait_for_replicas(server, 1)
        assert _ask(server.base_url)
        pids = server.pids()
        assert len(pids) > 3, pids  # the command, Ray's processes, the replica and its og worker
        _ends_cleanly(server, pids, lambda: os.killpg(server.proc.pid, sig))
    finally:
        server.terminate()


def _serve(model: Path, *flags: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "genai_qwen3vl.serve", str(model), "--port", "0", *flags]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--ray-replicas", "0"], "--ray-replicas '0': give N >= 1"),
        (["--ray-replicas", "3:1"], "MIN:MAX with 0 <= MIN <= MAX"),
        (["--ray-replicas", "two"], "'two' is not N or MIN:MAX"),
        (["--ray-replicas", "1:2", "--ray-autoscaling", "{target"], "--ray-autoscaling is not JSON"),
        (["--ray-replicas", "1:2", "--ray-autoscaling", '{"no_such_field": 1}'], "['no_such_field']; give a JSON object"),
        (["--ray-replicas", "1:2", "--ray-autoscaling", '{"upscale_delay_s": -5}'], "--ray-autoscaling: "),
        (["--ray-replicas", "1", "--ray-cpus-per-replica", "0"], "must be a number of CPUs > 0"),
        (["--ray", "127.0.0.1:9"], "--ray goes with --ray-replicas N"),
        (["--ray-autoscaling", "{}"], "--ray-autoscaling goes with --ray-replicas N"),
        (["--ray-replicas", "1", "--ray", "127.0.0.1:9"], "cannot connect to Ray at 127.0.0.1:9"),
        (["--ray-replicas", "1", "--ray"], "cannot connect to Ray at this machine (the cluster `ray start` runs here)"),
    ],
)
def test_bad_ray_flags_are_one_line(exported, flags, message):
    proc = _serve(exported(PRESET), *flags)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.startswith("error") or ": error:" in line]) == 1, proc.stderr


def test_a_ray_serve_config_file_builds_the_same_deployment(exported):
    """``serve run genai_qwen3vl.runtime.serve.ray_serve:app_builder model_dir=... ray_replicas=1:3``
    (the args of a config file) gives what the command's flags give; a bad folder or flag is a
    ValueError naming it."""
    from genai_qwen3vl.runtime.serve.ray_serve import app_builder

    model = exported(PRESET)
    app = app_builder({"model_dir": str(model), "ray_replicas": "1:3", "max_concurrency": 2, "max_queue": 5})
    deployment = app._bound_deployment  # Ray's Application keeps it there; no public accessor in 2.60
    scaling = deployment._deployment_config.autoscaling_config
    assert (scaling.min_replicas, scaling.max_replicas, scaling.target_ongoing_requests) == (1, 3, 2)
    assert deployment.max_ongoing_requests == 7 and deployment.ray_actor_options["num_cpus"] == 1
    fixed = app_builder({"model_dir": str(model), "ray_replicas": 2})._bound_deployment
    assert fixed.num_replicas == 2 and fixed._deployment_config.autoscaling_config is None
    with pytest.raises(ValueError, match="genai_config.json"):
        app_builder({"model_dir": str(model.parent)})
    with pytest.raises(ValueError, match="not the serve command's flags"):
        app_builder({"model_dir": str(model), "no_such_flag": 1})
