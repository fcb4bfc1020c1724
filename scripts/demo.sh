#!/usr/bin/env bash
# Set up, then run the built-in default job: make a tiny random Qwen3-VL, export it, ask it about
# a generated picture through stock onnxruntime-genai, print the answer and its parity with transformers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
genai-qwen3vl demo "$@"
