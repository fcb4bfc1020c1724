"""The batch command on this machine: inputs (a folder, JSONL, CSV, Parquet), answers equal to og's
greedy generation, bad rows recorded as errors, and exactly-once output however the job is stopped
(Ctrl-C, kill -9 of the command, an engine process killed, a full disk)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genai_qwen3vl.runtime.batch.table import Row, TableError, read_rows
from genai_qwen3vl.testing.media import make_picture, write_video

PROMPT = "Describe it."


def batch(model, *args, env=None, timeout=600, wait=True):
    command = [sys.executable, "-m", "genai_qwen3vl", "batch", str(model), *map(str, args)]
    if not wait:
        return subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def _rows(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    """Pictures of several sizes, a video, a corrupt image and a truncated video."""
    folder = tmp_path_factory.mktemp("media")
    for i, (h, w) in enumerate([(64, 96), (96, 64), (80, 80), (128, 96)]):
        Image.fromarray(make_picture(h, w, seed=i)).save(folder / f"p{i}.png")
    frames = np.stack([np.full((64, 96, 3), 30 * i, np.uint8) for i in range(6)])
    write_video(folder / "clip.mp4", frames, fps=6)
    (folder / "bad").mkdir()
    (folder / "bad" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png" * 4)
    (folder / "bad" / "cut.mp4").write_bytes((folder / "clip.mp4").read_bytes()[:300])
    return folder


def _table(path: Path, media: Path, count: int) -> Path:
    """``count`` rows over the pictures (relative paths), with per-row prompts and max_tokens."""
    pictures = sorted(p.name for p in media.glob("p*.png"))
    if not (path.parent / media.name).exists():
        (path.parent / media.name).symlink_to(media)  # the table names them relative to its folder
    with path.open("w") as out:
        for i in range(count):
            row = {"id": f"r{i:03d}", "image": f"{media.name}/{pictures[i % len(pictures)]}", "prompt": f"Question {i}?", "max_tokens": 6}
            out.write(json.dumps(row) + "\n")
    return path


# ---------------------------------------------------------------------- the input
def test_tables_and_folders_read_as_rows(tmp_path, media):
    (tmp_path / "m").symlink_to(media)
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text(
        json.dumps({"id": 1, "image": ["m/p0.png", "m/p1.png"], "prompt": "Both?", "system": "Be brief.", "max_tokens": 9})
        + "\n\n"
        + json.dumps({"id": "b", "video": "/abs/v.mp4", "response_format": {"type": "json_object"}})
        + "\n"
    )
    first, second = read_rows(jsonl, prompt="Default?")
    assert first == Row("1", "Both?", (str(tmp_path / "m/p0.png"), str(tmp_path / "m/p1.png")), (), "Be brief.", 9, None)
    assert second == Row("b", "Default?", (), ("/abs/v.mp4",), None, None, {"type": "json_object"})
    csv_file = tmp_path / "t.csv"
    two = '"[""m/p0.png"", ""m/p1.png""]"'
    lines = ["id,image,prompt,max_tokens,response_format", "a,m/p0.png,Hi?,3,", f'b,{two},Two?,,"{{""type"": ""json_object""}}"']
    csv_file.write_text("\n".join(lines) + "\n")
    a, b = read_rows(csv_file)
    assert a.images == (str(tmp_path / "m/p0.png"),) and a.max_tokens == 3 and b.images[1].endswith("p1.png")
    assert b.response_format == {"type": "json_object"}
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"id": "x", "image": ["m/p2.png"], "prompt": "P?"}]), tmp_path / "t.parquet")
    (x,) = read_rows(tmp_path / "t.parquet")
    assert x.images == (str(tmp_path / "m/p2.png"),)
    folder_rows = read_rows(media, prompt="What?")
    assert [r.id for r in folder_rows] == ["bad/corrupt.png", "bad/cut.mp4", "clip.mp4", "p0.png", "p1.png", "p2.png", "p3.png"]
    assert folder_rows[2].videos and folder_rows[3].images


@pytest.mark.parametrize(
    "text, words",
    [
        ('{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n', "appears twice"),
        ('{"id": "a"}\n', "no 'prompt'"),
        ('{"id": "a", "prompt": "x", "colour": 1}\n', "unknown columns colour"),
        ('{"id": "a", "prompt": "x", "max_tokens": 0}\n', "max_tokens"),
        ("[1]\n", "JSON object"),
        ("{oops\n", "not JSON"),
    ],
)
def test_a_table_that_cannot_be_read_is_one_line_naming_the_row(tmp_path, exported, text, words):
    table = tmp_path / "t.jsonl"
    table.write_text(text)
    with pytest.raises(TableError, match=words):
        read_rows(table)
    proc = batch(exported("awkward"), "--input", table, "--output", tmp_path / "o.jsonl")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and words in proc.stderr, proc.stderr
    assert not (tmp_path / "o.jsonl").exists()


# ---------------------------------------------------------------------- answers
def test_a_folder_is_answered_as_og_answers_and_bad_files_are_errors(tmp_path, exported, media):
    from genai_qwen3vl.runtime.processor import Qwen3VLProcessor
    from genai_qwen3vl.verify.generation import og_generate

    model = exported("awkward")
    out = tmp_path / "answers.jsonl"
    proc = batch(model, "--input", media, "--prompt", PROMPT, "--output", out, "--temperature", 0, "--max-tokens", 8, "--quiet")
    assert proc.returncode == 3, proc.stderr  # some rows failed: the corrupt image and the cut video
    rows = {r["id"]: r for r in _rows(out)}
    assert sorted(rows) == sorted(r.id for r in read_rows(media, PROMPT))
    assert rows["bad/corrupt.png"]["error"] and rows["bad/cut.mp4"]["error"] and rows["bad/corrupt.png"]["text"] is None
    processor = Qwen3VLProcessor(model)
    for name in ("p0.png", "p3.png"):
        row = rows[name]
        assert row["error"] is None and row["completion_tokens"] >= 1 and row["seconds"] > 0
        path = str(media / name)
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
        prompt = processor.apply_chat_template(messages)
        assert row["prompt_tokens"] == processor.process(prompt, images=[path]).input_ids.shape[1]
        expected = og_generate(model, prompt, [path], steps=row["completion_tokens"], processor="ours")
        assert row["text"] == processor.tokenizer.decode(expected.tokens, skip_special_tokens=True)
    assert rows["clip.mp4"]["error"] is None
    assert "done: 7 rows" in proc.stderr and "(2 with an error)" in proc.stderr


def test_parquet_output_and_json_rows(tmp_path, exported, media):
    table = tmp_path / "t.jsonl"
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9}},
        "required": ["n"],
        "additionalProperties": False,
    }
    table.write_text(
        json.dumps(
            {
                "id": "j",
                "image": str(media / "p0.png"),
                "prompt": "A number?",
                "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}},
            }
        )
        + "\n"
        + json.dumps({"id": "long", "prompt": "word " * 5000})
        + "\n"
        + json.dumps({"id": "gone", "image": "missing.png", "prompt": "?"})
        + "\n"
    )
    out = tmp_path / "answers.parquet"
    proc = batch(
        exported("awkward"), "--input", table, "--output", out, "--temperature", 0, "--max-tokens", 40, "--max-model-len", 1024, "-q"
    )
    assert proc.returncode == 3, proc.stderr
    rows = {r["id"]: r for r in _rows(out)}
    assert json.loads(rows["j"]["json"]) == json.loads(rows["j"]["text"]) and 0 <= json.loads(rows["j"]["json"])["n"] <= 9
    assert "no room for an answer within 1024" in rows["long"]["error"] and "does not exist" in rows["gone"]["error"]


# ---------------------------------------------------------------------- exactly once
def _clean(model, table, tmp_path) -> dict:
    out = tmp_path / "clean.jsonl"
    proc = batch(model, "--input", table, "--output", out, "--temperature", 0, "--quiet")
    assert proc.returncode == 0, proc.stderr
    return {r["id"]: r["text"] for r in _rows(out)}


def _wait_for_chunks(out: Path, proc, count: int = 1, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list(out.with_name(out.name + ".parts").glob("chunk-*"))) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"no chunk was written (exit {proc.poll()}): {proc.stderr.read() if proc.poll() is not None else ''}")


def _exactly_once(out: Path, expected: dict) -> None:
    rows = _rows(out)
    assert [r["id"] for r in rows] == sorted(expected) and {r["id"]: r["text"] for r in rows} == expected
    assert not out.with_name(out.name + ".parts").exists()


def test_stopped_any_way_the_rerun_writes_each_row_once(tmp_path, exported, media):
    model = exported("awkward")
    table = _table(tmp_path / "t.jsonl", media, 24)
    expected = _clean(model, table, tmp_path)
    for how in ("kill -9", "ctrl-c", "engine killed"):
        out = tmp_path / f"{how.replace(' ', '_')}.jsonl"
        proc = batch(model, "--input", table, "--output", out, "--temperature", 0, "--chunk-rows", 2, "--quiet", wait=False)
        _wait_for_chunks(out, proc)
        if how == "kill -9":
            proc.kill()
        elif how == "ctrl-c":
            proc.send_signal(signal.SIGINT)
        else:
            children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
            # the engine processes, not multiprocessing's resource tracker
            engines = [pid for pid in children if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")]
            assert engines, children
            os.kill(int(engines[0]), signal.SIGKILL)
        rc = proc.wait(300)
        err = proc.stderr.read()
        if how == "ctrl-c":
            assert rc == 130 and "run the same command again" in err, err
        if how == "engine killed":
            assert rc == 0, err  # the engine was replaced, its row tried again: the job ended
            _exactly_once(out, expected)
            continue
        assert not out.exists() or rc == 0
        rerun = batch(model, "--input", table, "--output", out, "--temperature", 0, "--quiet")
        assert rerun.returncode == 0, rerun.stderr
        assert "rows are already in" in rerun.stderr, rerun.stderr
        _exactly_once(out, expected)


def test_a_full_disk_stops_the_job_in_one_line_and_the_rerun_goes_on(tmp_path, exported, media):
    """RLIMIT_FSIZE makes writes past a size fail (EFBIG; Python ignores SIGXFSZ), as a full disk does."""
    import resource

    model = exported("awkward")
    table = _table(tmp_path / "t.jsonl", media, 16)
    expected = _clean(model, table, tmp_path)
    out = tmp_path / "out.jsonl"
    limit = 1500  # a few chunks of 2 rows fit, not all 16 rows

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    command = [sys.executable, "-m", "genai_qwen3vl", "batch", str(model), "--input", str(table), "--output", str(out)]
    command += ["--temperature", "0", "--chunk-rows", "2", "--quiet"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, preexec_fn=small_files)
    assert proc.returncode == 4 and proc.stderr.strip().splitlines()[-1].startswith("error: cannot write "), proc.stderr
    assert "run the same command again" in proc.stderr and "Traceback" not in proc.stderr
    rerun = batch(model, "--input", table, "--output", out, "--temperature", 0, "--quiet")
    assert rerun.returncode == 0, rerun.stderr
    _exactly_once(out, expected)
