#!/usr/bin/env python3
"""The library calls behind the chat sample, for one video question, greedy.

    python examples/describe_video.py qwen3vl-2b-cpu clip.mp4 "What happens in this video?"
"""

import sys

import onnxruntime_genai as og

from genai_qwen3vl import Qwen3VLProcessor


def main(model_dir: str, video: str, question: str) -> None:
    model = og.Model(model_dir)
    processor = Qwen3VLProcessor(model_dir)
    messages = [{"role": "user", "content": [{"type": "video", "video": video}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(messages)
    inputs = processor(prompt, videos=[video])  # frames sampled, resized and timestamped as transformers does

    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=4096)
    generator = og.Generator(model, params)
    generator.set_inputs(inputs)
    stream = og.Tokenizer(model).create_stream()
    while not generator.is_done():
        generator.generate_next_token()
        print(stream.decode(generator.get_next_tokens()[0]), end="", flush=True)
    print()


if __name__ == "__main__":
    main(*sys.argv[1:4])
