"""The benchmark's memory figures are each engine's own: a child process reports its own peak,
not the peak of the parent that started it (ru_maxrss survives exec; VmHWM does not)."""

import subprocess
import sys

import numpy as np

from ..helpers import ROOT


def test_a_child_reports_its_own_peak_not_its_parents():
    ballast = np.ones(2**28 // 8, dtype=np.float64)  # 256 MB resident in this (the parent) process
    ballast += 1
    with open("/proc/self/status") as f:
        parent_peak_gb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 2**20
    probe = "import sys; sys.path.insert(0, sys.argv[1]); from benchmarks.run import _peak_gb; print(_peak_gb())"
    child = float(subprocess.run([sys.executable, "-c", probe, str(ROOT)], capture_output=True, text=True, check=True).stdout)
    assert parent_peak_gb > 0.25 and child < parent_peak_gb / 2, (child, parent_peak_gb)
    del ballast
