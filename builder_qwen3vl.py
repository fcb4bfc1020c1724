#!/usr/bin/env python3
"""Export a Hugging Face Qwen3-VL checkpoint for stock onnxruntime-genai (og's builder style):

    python builder_qwen3vl.py (-m HUB_ID | -i LOCAL_DIR) -o OUT_DIR -p PRECISION -e EP [--validate]

``--help`` lists every flag.
"""

from genai_qwen3vl.cli import exit_process, export_main

if __name__ == "__main__":
    exit_process(lambda: export_main(prog="builder_qwen3vl.py"))
