#!/usr/bin/env python3
"""Export a Hugging Face Qwen3-VL checkpoint for stock onnxruntime-genai.

    python builder_qwen3vl.py (-m HUB_ID | -i LOCAL_DIR) -o OUT_DIR -p fp32 -e cpu
"""

import sys

from genai_qwen3vl.cli import main

if __name__ == "__main__":
    sys.exit(main())
