"""``python -m genai_qwen3vl COMMAND ...``: the same as the ``genai-qwen3vl`` command."""

import sys

from .cli import PROGRAM, console_main

if __name__ == "__main__":
    sys.argv[0] = PROGRAM
    console_main()
