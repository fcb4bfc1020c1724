"""Ctrl-C during an export, at many points: exit 130, one line, nothing at the output path (not
even a staging folder), whenever the signal arrives before the command ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from ..helpers import ROOT


class Export:
    """``builder_qwen3vl.py`` in its own process group (a terminal's Ctrl-C signals the whole
    group: the command and any stage process); its stderr read line by line as it comes."""

    def __init__(self, checkpoint, out, env=None):
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "builder_qwen3vl.py"), "-i", str(checkpoint), "-o", str(out), "-p", "fp32", "-e", "cpu"],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=ROOT, start_new_session=True,
            env={**os.environ, **(env or {})},
        )
        self.start = time.monotonic()
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float = 300) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if any(text in line for line in self.lines):
                return True
            time.sleep(0.005)
        return any(text in line for line in self.lines)

    def interrupt(self) -> bool:
        """Ctrl-C now; False if the command had already ended."""
        if self.proc.poll() is not None:
            return False
        os.killpg(self.proc.pid, signal.SIGINT)
        return True

    def finish(self) -> tuple[int, str]:
        rc = self.proc.wait(300)
        self._reader.join(30)
        return rc, "".join(self.lines)


@pytest.mark.slow
def test_ctrl_c_at_any_point_exits_130_and_writes_nothing(checkpoints, tmp_path):
    checkpoint = checkpoints("awkward")
    reference = Export(checkpoint, tmp_path / "reference")
    rc, log = reference.finish()
    assert rc == 0, log
    duration = time.monotonic() - reference.start
    # a spread of delays across the whole export, then the moments right after each stage begins
    # (between stages) and right before the publish, with stages in their own processes too
    points = [("delay", duration * f, None) for f in (0.05, 0.3, 0.55, 0.8)]
    points += [("after", f"[{n}/6]", None) for n in (2, 4, 6)]
    points += [("after", "[2/6]", {"GENAI_QWEN3VL_ISOLATE_STAGES": "1"}), ("after", "[4/6]", {"GENAI_QWEN3VL_ISOLATE_STAGES": "1"})]
    sent = 0
    for i, (kind, when, env) in enumerate(points):
        out = tmp_path / f"out{i}"
        export = Export(checkpoint, out, env)
        if kind == "delay":
            time.sleep(max(0.0, when - (time.monotonic() - export.start)))
        else:
            assert export.wait_for(when), "".join(export.lines)
        interrupted = export.interrupt()
        rc, log = export.finish()
        if not interrupted:  # it had finished already: a complete export
            assert rc == 0 and (out / "genai_config.json").is_file(), log
            continue
        sent += 1
        assert rc == 130, f"{kind} {when}: exit {rc}\n{log}"
        assert log.rstrip().splitlines()[-1] == "interrupted: nothing was written to the output folder", log
        assert "Traceback" not in log, log
        assert not out.exists(), f"{kind} {when}: {sorted(p.name for p in out.iterdir())}"
        assert not list(tmp_path.glob(".genai_qwen3vl-staging-*")), f"{kind} {when}: a staging folder is left"
    assert sent >= len(points) - 1, f"only {sent} of {len(points)} interrupts arrived before the export ended"
