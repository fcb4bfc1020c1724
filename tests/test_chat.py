"""The chat sample: one-shot and interactive multi-turn, both processors, clear errors."""

import subprocess
import sys

import numpy as np

from genai_qwen3vl.chat import build_parser, search_options


def run_chat(*args, stdin=None):
    proc = subprocess.run(
        [sys.executable, "-m", "genai_qwen3vl.chat", *map(str, args)],
        input=stdin.encode() if stdin else None, capture_output=True, timeout=300,
    )
    # bytes, decoded without newline translation: the answer may contain a "\r"
    proc.stdout, proc.stderr = proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")
    return proc


def test_one_shot_answer_equals_greedy_generation(exported, image_file):
    from genai_qwen3vl.parity import og_generate
    from genai_qwen3vl.processing import Qwen3VLProcessor

    out = exported("awkward")
    path = image_file(96, 128, 1)
    proc = run_chat("-m", out, "--image", path, "-p", "What is this?", "--greedy", "--max_length", 60)
    assert proc.returncode == 0, proc.stderr
    answer = proc.stdout.split("Assistant: ", 1)[1].rstrip("\n")
    messages = [{"role": "user", "content": [{"type": "image", "image": str(path)}, {"type": "text", "text": "What is this?"}]}]
    prompt = Qwen3VLProcessor(out).apply_chat_template(messages)
    prompt_len = Qwen3VLProcessor(out).process(prompt, images=[path]).input_ids.shape[1]
    expected = og_generate(out, prompt, [str(path)], steps=60 - prompt_len, processor="ours")
    # the chat stops at eos or max_length; og_generate runs on, so the answer is a prefix
    import onnxruntime_genai as og

    from genai_qwen3vl.parity import og_model

    stream = og.Tokenizer(og_model(out)).create_stream()
    streamed = "".join(stream.decode(t) for t in expected.tokens)
    assert answer and streamed.startswith(answer)


def test_interactive_two_turns_with_video_then_text(exported, tmp_path, image_file):
    frames = np.stack([np.full((64, 96, 3), 40 * i, np.uint8) for i in range(6)])
    import av

    video = tmp_path / "clip.mp4"
    with av.open(str(video), "w") as container:
        stream = container.add_stream("mpeg4", rate=6)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    turns = f"{image_file(64, 64, 2)}\n{video}\nWhat happens?\n\n\nAnd then?\n\n"
    proc = run_chat("-m", exported("awkward"), "--greedy", "--max_length", 400, stdin=turns)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("Assistant: ") == 2


def test_stock_processor_and_errors(exported, image_file):
    out = exported("awkward")
    proc = run_chat("-m", out, "--processor", "stock", "--image", image_file(96, 128, 1), "-p", "Hi", "--greedy", "--max_length", 50)
    assert proc.returncode == 0, proc.stderr and "Assistant: " in proc.stdout
    proc = run_chat("-m", out, "--image", "/nope.png", "-p", "Hi")
    assert proc.returncode == 2 and "/nope.png" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_chat("-m", out, "--processor", "stock", "--video", "/x.mp4", "-p", "Hi")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_sampling_defaults_come_from_genai_config():
    defaults = {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.0, "max_length": 8192}
    assert search_options(build_parser().parse_args(["-m", "x"]), defaults) == defaults
    opts = search_options(build_parser().parse_args(["-m", "x", "--greedy", "--top_k", "5"]), defaults)
    assert opts["do_sample"] is False and opts["top_k"] == 5 and opts["temperature"] == 0.7
