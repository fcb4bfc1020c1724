#!/usr/bin/env bash
# Create .venv (once) and install the project with everything: the runtime, the export and verify
# extras and the test tools, at the versions pinned in constraints.txt (the reference stack the tests
# check against cannot move under us). Idempotent: reinstalls only when setup.py, pyproject.toml or
# constraints.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."
# The chat page's test drives Debian's Chromium (Playwright's own browser download cannot work offline).
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null; then
  echo "installing Debian's chromium for the page test" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq >/dev/null && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
stamp=.venv/.genai_qwen3vl-installed
want="$(cat setup.py pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && python -c "import genai_qwen3vl" 2>/dev/null; then
  exit 0
fi
echo "setting up .venv (first run: several minutes; torch alone is about 5.5 GB with its CUDA libraries)" >&2
python -m pip install --quiet --upgrade pip
# A pinned torch/torchvision pair: transformers' Qwen3-VL processor needs torchvision, and an
# unpinned `pip install torch` may pull a different multi-GB build.
if ! python -c "import torch, torchvision; assert torch.__version__.startswith('2.14.1') and torchvision.__version__.startswith('0.29.1')" 2>/dev/null; then
  python -m pip install --quiet -c constraints.txt "torch==2.14.1" "torchvision==0.29.1"
fi
# setuptools' notice about editable installs is information, not a warning for the user
PYTHONWARNINGS="ignore::UserWarning" python -m pip install --quiet -c constraints.txt -e ".[test,bench]"
echo "$want" > "$stamp"
