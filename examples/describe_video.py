#!/usr/bin/env python3
"""The library calls behind the chat sample, for one video question, greedy.

    python examples/describe_video.py qwen3vl-2b-cpu clip.mp4 "What happens in this video?"

The folder is one that builder_qwen3vl.py wrote; decoding the video needs PyAV.
"""

import sys

import onnxruntime_genai as og

from genai_qwen3vl import Qwen3VLProcessor
from genai_qwen3vl.runtime.generate import stream_tokens


def main(model_dir: str, video: str, question: str) -> None:
    model = og.Model(model_dir)
    processor = Qwen3VLProcessor(model_dir)
    messages = [{"role": "user", "content": [{"type": "video", "video": video}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(messages)
    inputs = processor(prompt, videos=[video])  # frames sampled, resized and timestamped as transformers does

    stream = og.Tokenizer(model).create_stream()
    # og.GeneratorParams with these search options, og.Generator.set_inputs, then one token a step
    for token in stream_tokens(model, inputs, {"do_sample": False, "max_length": 4096}):
        print(stream.decode(token), end="", flush=True)
    print()


if __name__ == "__main__":
    main(*sys.argv[1:4])
