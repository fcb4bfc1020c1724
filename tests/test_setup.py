"""The README's commands set up once: a second run of the setup installs nothing and prints nothing."""

import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import ROOT


def test_setup_script_does_nothing_when_the_venv_is_current():
    if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        pytest.skip("the suite is not running in the project's .venv, which scripts/setup.sh manages")
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    # the first call may install (setup.py changed since the last run); the second must not
    again = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh")], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and again.stdout == "" and again.stderr == "", again.stdout + again.stderr
