"""The batch command against a naive Python loop over og, in one run: rows/s, tokens/s and memory
for the same table answered by

* a naive loop: one og model in one process, the rows one after another (what a user writes by hand);
* ``genai-qwen3vl batch`` with 1 and 2 local engine processes;
* ``genai-qwen3vl batch --ray`` (Ray Data, a local cluster the command starts) with 1 and 2 actors;
* one local engine and one Ray actor of one thread each, the other cores left to the rest (Ray's
  own processes and the driver need CPU too: on a machine with no core to spare they take it from
  the engines);

all on the same cores (each engine's og threads = cores / engines, except the one-thread pair), greedy, each row an image and a
question with the same ``--max-tokens``. Two rates per mode: over the whole command (model loads and
Ray's start-up included: what a user waits for) and over the job (from the first row handed out, as
the command's summary reports it). Memory: the peak resident set of each process that holds a model
(VmHWM, sampled from /proc every 0.2 s), and of the whole process tree at once.

    python benchmarks/batch.py                            # the 2B-wide checkpoint cut to 8 layers, int4, CPU
    python benchmarks/batch.py --rows 60 --json docs/batch_benchmark.json

Each mode runs alone, one after the other, so they never share the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

QUESTION = "Describe this picture."
SIDES = (224, 288, 320)  # three picture sizes, so rows differ in prompt length


def make_table(folder: Path, rows: int) -> Path:
    from PIL import Image

    from genai_qwen3vl.testing.media import make_picture

    lines = []
    for i in range(rows):
        side = SIDES[i % len(SIDES)]
        picture = folder / f"p{i:04d}.png"
        Image.fromarray(make_picture(side, side + 32, seed=i)).save(picture)
        lines.append(json.dumps({"id": f"r{i:04d}", "image": picture.name, "prompt": QUESTION}))
    table = folder / "table.jsonl"
    table.write_text("\n".join(lines) + "\n")
    return table


class TreeMemory:
    """Samples the resident memory of a process and its descendants until stopped."""

    def __init__(self, pid: int):
        self.pid, self.peak_total, self.hwm, self.cpu = pid, 0, {}, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _tree(self) -> list[int]:
        pids, i = [self.pid], 0
        while i < len(pids):
            try:
                for task in Path(f"/proc/{pids[i]}/task").iterdir():
                    pids += [int(p) for p in (task / "children").read_text().split()]
            except (FileNotFoundError, ProcessLookupError):
                pass
            i += 1
        return pids

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            total = 0
            for pid in self._tree():
                try:
                    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
                    name = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120]
                except (FileNotFoundError, ProcessLookupError):
                    continue
                rss = int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
                try:
                    ticks = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    self.cpu[pid] = ((int(ticks[11]) + int(ticks[12])) / os.sysconf("SC_CLK_TCK"), name)
                except (FileNotFoundError, ProcessLookupError, IndexError):
                    pass
                total += rss
                # keyed by pid: a Ray worker renames itself (ray::IDLE, then the actor's class)
                peak = max(self.hwm.get(pid, (0, ""))[0], int(fields.get("VmHWM", "0 kB").split()[0]) * 1024)
                self.hwm[pid] = (peak, name)
            self.peak_total = max(self.peak_total, total)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        # the processes that held a model: the largest ones (a model is hundreds of MB; Ray's own are below 150 MB)
        big = sorted((v for v in self.hwm.values() if v[0] > 300 * 2**20), reverse=True)
        return {
            "peak_tree_mb": round(self.peak_total / 2**20),
            "model_process_peaks_mb": [round(v / 2**20) for v, _ in big],
            "model_processes": [name.split(" --")[0][:60] for _, name in big],
            # CPU seconds (user + system) of the model processes and of everything else in the tree
            "cpu_s_model_processes": round(sum(self.cpu.get(pid, (0.0, ""))[0] for pid, v in self.hwm.items() if v[0] > 300 * 2**20), 1),
            "cpu_s_other": round(sum(c for pid, (c, _) in self.cpu.items() if self.hwm.get(pid, (0, ""))[0] <= 300 * 2**20), 1),
        }


NAIVE = r"""
import json, sys, time
from pathlib import Path
import onnxruntime_genai as og
from genai_qwen3vl.runtime.generate import TokenStream
from genai_qwen3vl.runtime.processor import Qwen3VLProcessor

model_dir, table, max_tokens = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
started, rows, tokens = time.monotonic(), 0, 0  # the model's load counts, as in the batch command's summary
model = og.Model(str(model_dir))
processor = Qwen3VLProcessor(model_dir)
for line in table.read_text().splitlines():
    row = json.loads(line)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": row["prompt"]}]}]
    prompt = processor.apply_chat_template(messages)
    inputs = processor(prompt, images=[str(table.parent / row["image"])])
    length = int(inputs["input_ids"].shape()[-1]) + max_tokens
    tokens += len(list(TokenStream(model, inputs, {"do_sample": False, "max_length": length})))
    rows += 1
seconds = time.monotonic() - started
print(f"done: this run answered {rows} rows, {tokens} tokens in {seconds:.1f} s", file=sys.stderr)
"""

SUMMARY = re.compile(r"answered (\d+) rows, (\d+) tokens in ([0-9.]+) s")


def run_mode(name: str, cmd: list[str], env: dict) -> dict:
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    memory = TreeMemory(proc.pid)
    out, err = proc.communicate()
    wall = time.monotonic() - start
    mem = memory.stop()
    found = SUMMARY.search(err)
    if proc.returncode != 0 or not found:
        raise SystemExit(f"{name} failed (exit {proc.returncode}):\n{err[-3000:]}")
    rows, tokens, job = int(found.group(1)), int(found.group(2)), float(found.group(3))
    result = {
        "mode": name,
        "rows": rows,
        "tokens": tokens,
        "wall_s": round(wall, 1),
        "rows_per_s_wall": round(rows / wall, 3),
        "tokens_per_s_wall": round(tokens / wall, 1),
        "job_s": job,
        "rows_per_s_job": round(rows / job, 3),
        "tokens_per_s_job": round(tokens / job, 1),
        **mem,
    }
    print(json.dumps(result), flush=True)
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, help="an exported folder (default: the 2B-wide checkpoint cut to --layers, int4)")
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--rows", type=int, default=24)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--modes", default="naive,batch1,batch2,ray1,ray2,batch1t1,ray1t1")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    if args.model is None:
        from benchmarks.serve import default_model

        args.model = default_model(args.layers)
    cores = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="gq-batch-bench-"))
    table = make_table(work, args.rows)
    # Ray's socket paths must fit 107 bytes: a short temp dir of its own
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": str(work)}
    cli = [sys.executable, "-m", "genai_qwen3vl", "batch", str(args.model), "--input", str(table), "--temperature", "0"]
    cli += ["--max-tokens", str(args.max_tokens), "--quiet"]
    modes = {
        "naive": [sys.executable, "-c", NAIVE, str(args.model), str(table), str(args.max_tokens)],
        "batch1": [*cli, "--output", str(work / "b1.jsonl"), "--workers", "1", "--threads", str(cores)],
        "batch2": [*cli, "--output", str(work / "b2.jsonl"), "--workers", "2", "--threads", str(max(1, cores // 2))],
        "ray1": [*cli, "--output", str(work / "r1.jsonl"), "--ray", "--workers", "1", "--threads", str(cores)],
        "ray2": [*cli, "--output", str(work / "r2.jsonl"), "--ray", "--workers", "2", "--threads", str(max(1, cores // 2))],
        # one engine of one thread, the other cores left to the rest (Ray's own processes, the driver)
        "batch1t1": [*cli, "--output", str(work / "b1t1.jsonl"), "--workers", "1", "--threads", "1"],
        "ray1t1": [*cli, "--output", str(work / "r1t1.jsonl"), "--ray", "--workers", "1", "--threads", "1"],
    }
    results = [run_mode(name, modes[name], env) for name in args.modes.split(",")]
    by = {r["mode"]: r for r in results}
    ratios = {}
    for a, b in (("batch1", "naive"), ("batch2", "naive"), ("ray1", "batch1"), ("ray2", "batch2"), ("ray1t1", "batch1t1")):
        if a in by and b in by:
            ratios[f"{a}/{b}"] = {
                "job": round(by[a]["rows_per_s_job"] / by[b]["rows_per_s_job"], 3),
                "wall": round(by[a]["rows_per_s_wall"] / by[b]["rows_per_s_wall"], 3),
            }
    report = {
        "model": str(args.model),
        "model_mb": round(sum(f.stat().st_size for f in args.model.iterdir()) / 2**20),
        "cores": cores,
        "rows": args.rows,
        "max_tokens": args.max_tokens,
        "results": results,
        "ratios_rows_per_s": ratios,
    }
    print(json.dumps(ratios, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
