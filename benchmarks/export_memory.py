"""Peak memory and wall time of `builder_qwen3vl.py` on a random checkpoint with Qwen3-VL-2B's
(or Qwen3-VL-30B-A3B's) widths.

    python benchmarks/export_memory.py [--shape 2b|30b-a3b] [--layers N ...] [--vision-layers V] [-p fp32 int4] [--json PATH]

The export runs as a child process (its stages may spawn their own). A sampler reads
/proc/<pid>/status of the whole process tree every 0.1 s and keeps the peak of the summed
VmRSS (resident set: includes pages of memory-mapped checkpoint files, which the kernel can
drop at will) and of the summed RssAnon (memory the export really holds), overall and per
export stage. The goal: peak RSS at most 1.5x the checkpoint's size on disk. For the
mixture-of-experts shape, several depths show that the decoder stage's peak does not
grow with the number of layers (the experts stream).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.models import cached_checkpoint, checkpoint_bytes, qwen3vl_2b_shape, qwen3vl_30b_a3b_shape  # noqa: E402

SHAPES = {"2b": (qwen3vl_2b_shape, 28, 24), "30b-a3b": (qwen3vl_30b_a3b_shape, 48, 27)}


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return pids


def _status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def measure(checkpoint: Path, precision: str, ep: str = "cpu", keep: Path | None = None, extra: tuple[str, ...] = ()) -> dict:
    """Export ``checkpoint`` (with the ``extra`` command-line flags) and sample its memory; the
    output is deleted unless ``keep`` names where to write it."""
    out = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="export-mem-")) / "model"
    cmd = [sys.executable, str(ROOT / "builder_qwen3vl.py"), "-i", str(checkpoint), "-o", str(out), "-p", precision, "-e", ep, *extra]
    peaks = {"VmRSS": 0, "RssAnon": 0}
    stage_peaks: dict[str, dict[str, int]] = {}
    current = ["start"]
    lines: list[str] = []
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def sample():
        while proc.poll() is None:
            pids = _tree(proc.pid)
            stage = stage_peaks.setdefault(current[0], {"VmRSS": 0, "RssAnon": 0})
            for key in peaks:
                value = sum(_status_kb(p, key) for p in pids)
                peaks[key] = max(peaks[key], value)
                stage[key] = max(stage[key], value)
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for line in proc.stdout:  # "[4/6] decoder (...) ..." opens a stage
        lines.append(line)
        if line.startswith("[") and line.rstrip().endswith("..."):
            current[0] = line.split("]", 1)[1].split("(")[0].strip()
    proc.wait()
    log = "".join(lines)
    seconds = time.perf_counter() - start
    sampler.join()
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) if out.exists() else 0
    if not keep:
        shutil.rmtree(out.parent, ignore_errors=True)
    if proc.returncode:
        raise SystemExit(f"export failed ({precision}):\n{log}")
    return {
        "precision": precision,
        "seconds": round(seconds, 1),
        "peak_rss_gb": round(peaks["VmRSS"] / 2**20, 2),
        "peak_anon_gb": round(peaks["RssAnon"] / 2**20, 2),
        "output_gb": round(size / 2**30, 2),
        "stages": [line.strip() for line in log.splitlines() if "done in" in line],
        "stage_peak_rss_gb": {k: round(v["VmRSS"] / 2**20, 2) for k, v in stage_peaks.items() if k != "start"},
        "stage_peak_anon_gb": {k: round(v["RssAnon"] / 2**20, 2) for k, v in stage_peaks.items() if k != "start"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="2b")
    parser.add_argument("--layers", type=int, nargs="+", help="text depths to measure (default: the model's full depth)")
    parser.add_argument("--vision-layers", type=int)
    parser.add_argument("-p", "--precisions", nargs="+", default=["fp32", "int4"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    make, layers, vision = SHAPES[args.shape]
    report = []
    for depth in args.layers or [layers]:
        ckpt = cached_checkpoint(make(depth, args.vision_layers or vision))
        disk = checkpoint_bytes(ckpt) / 2**30
        print(f"checkpoint {ckpt.name}: {disk:.2f} GB on disk (bf16)")
        results = []
        for precision in args.precisions:
            r = measure(ckpt, precision)
            r["rss_over_disk"] = round(r["peak_rss_gb"] / disk, 2)
            r["anon_over_disk"] = round(r["peak_anon_gb"] / disk, 2)
            results.append(r)
            print(
                f"{precision}: {r['seconds']} s; peak RSS {r['peak_rss_gb']} GB ({r['rss_over_disk']}x the checkpoint), "
                f"of which anonymous {r['peak_anon_gb']} GB ({r['anon_over_disk']}x); output {r['output_gb']} GB"
            )
            for line in r["stages"]:
                stage = line.split("]", 1)[1].split("(")[0].strip()
                rss, anon = r["stage_peak_rss_gb"].get(stage, 0), r["stage_peak_anon_gb"].get(stage, 0)
                print(f"    {line}; peak RSS {rss} GB, anonymous {anon} GB")
        report.append({"checkpoint": ckpt.name, "layers": depth, "checkpoint_gb": round(disk, 2), "exports": results})
    if args.json:
        data = report[0] if len(report) == 1 else {"shape": args.shape, "depths": report}
        args.json.write_text(json.dumps(data, indent=2))


if __name__ == "__main__":
    main()
