"""``python -m genai_qwen3vl.serve OUT_DIR``: the same as ``genai-qwen3vl serve OUT_DIR``
(genai_qwen3vl/runtime/serve/)."""

import sys

from .runtime.serve.main import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m genai_qwen3vl.serve"))
