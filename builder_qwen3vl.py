#!/usr/bin/env python3
"""Export a Hugging Face Qwen3-VL checkpoint for stock onnxruntime-genai (og's builder style):

    python builder_qwen3vl.py (-m HUB_ID | -i LOCAL_DIR) -o OUT_DIR -p PRECISION -e EP [--validate]
"""

import sys

from genai_qwen3vl.cli import export_main

if __name__ == "__main__":
    sys.exit(export_main(prog="builder_qwen3vl.py"))
