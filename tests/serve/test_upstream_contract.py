"""The upstream internals the server leans on, checked against what is installed: uvicorn's
H11Protocol (deadlines.py subclasses it) and pydantic-core's JSON error wording (protocol.py's
strict_json reads it). Each module refuses to import, with one line naming it, when they change."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from uvicorn.protocols.http.h11_impl import H11Protocol

from genai_qwen3vl.runtime.serve import deadlines, protocol

ROOT = Path(__file__).resolve().parents[2]


def test_the_installed_versions_have_what_the_server_uses():
    assert deadlines.uvicorn_internals_missing() == []
    assert protocol.jiter_wording_changed() == []
    # the versions recorded are the pinned ones: bumping a pin means checking these again
    pins = (ROOT / "constraints.txt").read_text().splitlines()
    assert deadlines.WRITTEN_AGAINST == "uvicorn 0.55.0" and "uvicorn==0.55.0" in pins
    assert protocol.JITER_WORDING == "pydantic-core 2.50.5" and "pydantic_core==2.50.5" in pins


def test_a_protocol_without_them_is_named():
    class Renamed(H11Protocol):
        def __init__(self, config, server_state, app_state, _loop=None):
            self.conn = None

    assert deadlines.uvicorn_internals_missing(Renamed) == ["loop", "transport", "logger"]
    assert deadlines.uvicorn_internals_missing(type("Old", (), {})) == list(deadlines.USES_METHODS)


BREAK = {
    "deadlines": "import uvicorn.protocols.http.h11_impl as m; del m.H11Protocol.on_response_complete",
    "protocol": "import pydantic_core as m; parse = m.from_json\n"
    "def reworded(*a, **k):\n"
    "    try:\n        return parse(*a, **k)\n    except ValueError:\n        raise ValueError('bad JSON') from None\n"
    "m.from_json = reworded",
}


@pytest.mark.parametrize("module", sorted(BREAK))
def test_the_import_fails_with_one_line_naming_the_module(module):
    code = f"{BREAK[module]}\nimport genai_qwen3vl.runtime.serve.{module}"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode != 0 and last.startswith("RuntimeError: ") and f"serve/{module}.py: " in last, result.stderr
