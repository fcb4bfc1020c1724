"""Ctrl-C during an export, at many points: exit 130, one line, nothing at the output path (not
even a staging folder), whenever the signal arrives before the command ends."""

from __future__ import annotations

import os
import shutil
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
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
            start_new_session=True,
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
        assert "Traceback" not in log, log
        if f"wrote {out}" in log:  # it arrived once the export was published: the export stands
            assert (out / "genai_config.json").is_file(), log
            # during the interpreter's teardown it is ignored (exit 0); before that, exit 130 says so
            last = log.rstrip().splitlines()[-1]
            assert rc == 0 or (rc == 130 and last == f"interrupted: the export at {out} is complete"), f"{kind} {when}: exit {rc}\n{log}"
            continue
        assert rc == 130, f"{kind} {when}: exit {rc}\n{log}"
        assert log.rstrip().splitlines()[-1] == "interrupted: nothing was written to the output folder", log
        assert not out.exists(), f"{kind} {when}: {sorted(p.name for p in out.iterdir())}"
        assert not list(tmp_path.glob(".genai_qwen3vl-staging-*")), f"{kind} {when}: a staging folder is left"
    assert sent >= len(points) - 1, f"only {sent} of {len(points)} interrupts arrived before the export ended"


# a real SIGINT to this process at the first audit event (sys.addaudithook) of a kind whose path
# argument is named so: a Ctrl-C at an exact point of an in-process export
_ctrl_c_at: dict[str, str] = {}


def _audit(event: str, args: tuple) -> None:
    prefix = _ctrl_c_at.get(event)
    if prefix is not None and args and isinstance(args[0], (str, os.PathLike)) and os.path.basename(os.fspath(args[0])).startswith(prefix):
        del _ctrl_c_at[event]
        os.kill(os.getpid(), signal.SIGINT)


sys.addaudithook(_audit)


def _overwrite(checkpoint, out, event: str, prefix: str, capsys) -> tuple[int, str]:
    """``export --overwrite`` over an old folder, Ctrl-C at ``event`` on a path named ``prefix...``."""
    from genai_qwen3vl.cli import export_main

    out.mkdir()
    (out / "old.txt").write_text("the old export")
    _ctrl_c_at[event] = prefix
    try:
        rc = export_main(["-i", str(checkpoint), "-o", str(out), "-p", "fp32", "-e", "cpu", "--overwrite"])
    finally:
        sent = event not in _ctrl_c_at
        _ctrl_c_at.clear()
    assert sent, f"no {event} of {prefix}... happened"
    return rc, capsys.readouterr().err


@pytest.mark.slow
def test_ctrl_c_while_the_replaced_folder_is_removed_keeps_the_new_export(checkpoints, tmp_path, capsys):
    """--overwrite: a Ctrl-C after the publish renames, while the old folder is removed, stops
    that (exit 130) and says the truth: the new export is complete at -o. A Ctrl-C during the
    renames undoes them: the old folder is back, nothing new is at -o."""
    out = tmp_path / "out"
    rc, err = _overwrite(checkpoints("awkward"), out, "shutil.rmtree", ".genai_qwen3vl-staging-old-", capsys)
    (left,) = tmp_path.glob(".genai_qwen3vl-staging-old-out-*")  # its removal stopped at the start
    last = f"interrupted: the export at {out.resolve()} is complete; delete {left}, what is left of the folder it replaced"
    assert rc == 130 and err.strip().splitlines()[-1] == last, err
    assert (out / "genai_config.json").is_file() and not (out / "old.txt").exists() and "Traceback" not in err
    shutil.rmtree(left)

    out = tmp_path / "out2"
    rc, err = _overwrite(checkpoints("awkward"), out, "os.rename", "out2", capsys)  # the old folder moved aside
    assert rc == 130 and err.strip().splitlines()[-1] == "interrupted: nothing was written to the output folder", err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "out2"], "a staging folder is left"
    assert [p.name for p in out.iterdir()] == ["old.txt"] and (out / "old.txt").read_text() == "the old export"


def test_a_ctrl_c_another_thread_takes_while_a_stage_process_starts_waits_for_it():
    """While a stage process is forked, a SIGINT that another thread of the exporter takes (the
    main thread's mask does not hold it back there) is held until the Popen object exists: not
    raised inside the block, raised at its end, to the handler in place before."""
    from genai_qwen3vl.export.stage_process import sigint_held

    reached = False
    with pytest.raises(KeyboardInterrupt):
        with sigint_held():
            # a Ctrl-C to the process, which the kernel gives to the one thread not blocking it
            sender = threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGINT))
            sender.start()
            sender.join()
            for _ in range(200):  # Python runs the handler in this thread meanwhile
                time.sleep(0.001)
            reached = True
    assert reached, "the Ctrl-C was raised inside the block"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
