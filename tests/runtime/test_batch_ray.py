"""The batch command on a real Ray cluster of two nodes on 127.0.0.1 (``ray start`` twice, one CPU
each, so the job's two one-CPU actors sit one per node): answers equal to the local engine's row
for row, the model shipped through the object store, an actor killed mid-job, the whole command
killed and rerun, bad rows recorded as errors, an unreachable cluster in one line."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .test_batch import _exactly_once, _rows, _table, _wait_for_chunks, batch, media  # noqa: F401 - the media fixture

pytest.importorskip("ray", reason="the Ray tests need the [ray] extra: pip install 'genai-qwen3vl[ray]'")
if shutil.which("ray", path=str(Path(sys.executable).parent)) is None:
    pytest.fail("Ray's command line is missing from this environment's bin folder", pytrace=False)

RAY = str(Path(sys.executable).parent / "ray")
ROWS = 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_env(temp: Path) -> dict:
    """Ray's token authentication, as a cluster should run: one token for the nodes and the driver."""
    token = secrets.token_hex(32)
    return {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": str(temp), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The head and a second node, each its own raylet with one CPU, on 127.0.0.1; the address."""
    temp = Path(f"/tmp/gq-ray-{os.getpid()}")  # short: Ray's socket paths must fit 107 bytes
    temp.mkdir(exist_ok=True)
    port = _free_port()
    env = _ray_env(temp)
    common = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    head = [RAY, "start", "--head", "--port", str(port), "--include-dashboard", "false", f"--temp-dir={temp}", *common]
    subprocess.run(head, check=True, capture_output=True, text=True, env=env, timeout=180)
    address = f"127.0.0.1:{port}"
    try:
        node = [RAY, "start", "--address", address, *common]
        subprocess.run(node, check=True, capture_output=True, text=True, env=env, timeout=180)
        deadline = time.monotonic() + 120
        while _alive_nodes(address, env) < 2:
            assert time.monotonic() < deadline, "the second Ray node never joined"
            time.sleep(1)
        yield address, env
    finally:
        _stop(temp)


def _alive_nodes(address: str, env: dict) -> int:
    code = f"import ray; ray.init(address={address!r}, logging_level='ERROR'); print(sum(n['Alive'] for n in ray.nodes()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120).stdout.split()
    return int(out[-1]) if out else 0


def _stop(temp: Path) -> None:
    """This cluster's processes only (``ray stop`` would stop every Ray on the machine)."""
    pids = subprocess.run(["pgrep", "-f", str(temp)], capture_output=True, text=True).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGTERM)
        except ProcessLookupError:
            pass
    time.sleep(2)
    for pid in subprocess.run(["pgrep", "-f", str(temp)], capture_output=True, text=True).stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def table_and_local(tmp_path_factory, exported, media):  # noqa: F811 - the media fixture
    """200 rows (pictures and text, relative paths) and the local engine's greedy answers to them."""
    folder = tmp_path_factory.mktemp("ray-table")
    table = _table(folder / "t.jsonl", media, ROWS)
    model = exported("awkward")
    out = folder / "local.jsonl"
    proc = batch(model, "--input", table, "--output", out, "--temperature", 0, "--workers", 1, "--quiet")
    assert proc.returncode == 0, proc.stderr
    return model, table, {r["id"]: r for r in _rows(out)}


def _ray_batch(cluster, model, table, out, *extra, wait=True):
    address, env = cluster
    args = ["--input", table, "--output", out, "--temperature", 0, "--ray", address, "--workers", 2, "--threads", 1, *extra]
    return batch(model, *args, env=env, timeout=900, wait=wait)


def _same_answers(out: Path, local: dict) -> None:
    rows = _rows(out)
    assert [r["id"] for r in rows] == list(local), "each row once, in the input's order"
    for row in rows:
        expected = local[row["id"]]
        assert row["error"] is None, row
        assert (row["text"], row["prompt_tokens"], row["completion_tokens"]) == (
            expected["text"],
            expected["prompt_tokens"],
            expected["completion_tokens"],
        ), row["id"]


def test_two_nodes_answer_as_the_local_engine_row_for_row(tmp_path, cluster, table_and_local):
    model, table, local = table_and_local
    out = tmp_path / "ray.parquet"
    proc = _ray_batch(cluster, model, table, out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "2 Ray actor(s) x 1 CPU(s)" in proc.stderr, proc.stderr
    _same_answers(out, local)


def _actor_pids() -> list[int]:
    """Ray Data's actors (their process title is ray::MapWorker(MapBatches(RayAnswerer)))."""
    found = subprocess.run(["pgrep", "-f", "MapBatches.RayAnswerer"], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in found]


def test_an_actor_killed_mid_job_is_replaced_and_every_row_is_written_once(tmp_path, cluster, table_and_local):
    """With the model shipped through the object store (--ray-ship), as for nodes without shared paths."""
    model, table, local = table_and_local
    out = tmp_path / "killed.jsonl"
    proc = _ray_batch(cluster, model, table, out, "--ray-ship", "--chunk-rows", 4, "--quiet", wait=False)
    _wait_for_chunks(out, proc, count=2, timeout=600)
    pids = _actor_pids()
    assert pids, "no Ray Data actor process found"
    os.kill(pids[0], signal.SIGKILL)
    assert proc.wait(900) == 0, proc.stderr.read()
    _same_answers(out, local)


def test_the_command_killed_and_rerun_writes_every_row_once(tmp_path, cluster, table_and_local):
    model, table, local = table_and_local
    out = tmp_path / "rerun.jsonl"
    proc = _ray_batch(cluster, model, table, out, "--chunk-rows", 4, "--quiet", wait=False)
    _wait_for_chunks(out, proc, count=2, timeout=600)
    proc.kill()
    proc.wait(60)
    deadline = time.monotonic() + 60  # the killed driver's actors are reclaimed by the cluster
    while _actor_pids() and time.monotonic() < deadline:
        time.sleep(0.5)
    rerun = _ray_batch(cluster, model, table, out, "--quiet")
    assert rerun.returncode == 0, rerun.stderr
    assert "rows are already in" in rerun.stderr, rerun.stderr
    _same_answers(out, local)


def test_bad_rows_are_errors_on_the_cluster_too(tmp_path, cluster, exported, media):  # noqa: F811
    """Shipped (--ray-ship): a missing file stays missing, a corrupt one travels and fails on the node."""
    rows = [
        {"id": "fine", "image": str(media / "p0.png"), "prompt": "What?", "max_tokens": 4},
        {"id": "missing", "image": str(tmp_path / "nowhere.png"), "prompt": "What?"},
        {"id": "corrupt", "image": str(media / "bad" / "corrupt.png"), "prompt": "What?"},
        {"id": "cut", "video": str(media / "bad" / "cut.mp4"), "prompt": "What?"},
        {"id": "long", "prompt": "word " * 3000, "max_tokens": 4},
    ]
    table = tmp_path / "bad.jsonl"
    table.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "bad_out.jsonl"
    proc = _ray_batch(cluster, exported("awkward"), table, out, "--max-model-len", 512, "--quiet", "--ray-ship")
    assert proc.returncode == 3, proc.stderr
    errors = {r["id"]: r["error"] for r in _rows(out)}
    assert errors["fine"] is None
    assert "nowhere.png" in errors["missing"]
    assert all(errors[key] for key in ("corrupt", "cut", "long")), errors
    assert "512" in errors["long"], errors["long"]


def test_an_unreachable_cluster_is_one_line(tmp_path, exported, media):  # noqa: F811
    table = _table(tmp_path / "t.jsonl", media, 2)
    port = _free_port()
    proc = batch(exported("awkward"), "--input", table, "--output", tmp_path / "o.jsonl", "--ray", f"127.0.0.1:{port}", timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert f"cannot connect to Ray at 127.0.0.1:{port}" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "o.jsonl").exists()
