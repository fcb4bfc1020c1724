#!/usr/bin/env python3
"""Chat with an exported Qwen3-VL (images and videos by path), like onnxruntime-genai's model-mm.py.

    python examples/chat.py -m qwen3vl-2b-cpu
    python examples/chat.py -m qwen3vl-2b-cpu --video clip.mp4 -p "What happens in this video?"

The same as `genai-qwen3vl chat`; needs only the runtime install (no torch).
"""

import sys

from genai_qwen3vl.runtime.chat import main

if __name__ == "__main__":
    sys.exit(main(prog="python examples/chat.py"))
