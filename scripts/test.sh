#!/usr/bin/env bash
# Set up, lint, then run the test suite (tiny random Qwen3-VL models, real og, ORT and transformers).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check .
ruff format --check .  # the formatter's layout, as `ruff format .` writes it
lint-imports --no-cache --no-logo  # the tier contracts in .importlinter
# the full lane, or with --fast the lane of a few minutes that still touches every tier
# (-m "not slow": tests/conftest.py marks what is slow)
lane=(--durations=25)
if [ "${1:-}" = "--fast" ]; then
  shift
  lane=(-m "not slow" --durations=10)
fi
# pytest-xdist: one worker per core, 4 at most (most tests wait on one-threaded work: an export,
# a process starting); GENAI_QWEN3VL_TEST_WORKERS=0 runs the suite in this process
workers="${GENAI_QWEN3VL_TEST_WORKERS:-$(python -c 'import os; print(min(4, len(os.sched_getaffinity(0))))')}"
set +e
python -m pytest tests -n "$workers" --dist load "${lane[@]}" "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit "$rc"
