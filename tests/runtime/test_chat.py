"""The chat sample: one-shot and interactive multi-turn, both processors, clear errors."""

import subprocess
import sys

import numpy as np
import onnxruntime_genai as og

from genai_qwen3vl.runtime.chat import build_parser, search_options
from genai_qwen3vl.runtime.processor import Qwen3VLProcessor
from genai_qwen3vl.testing.media import write_video
from genai_qwen3vl.verify.generation import og_generate, og_model


def run_chat(*args, stdin=None, module="genai_qwen3vl"):
    """``python -m genai_qwen3vl chat ARGS`` (the ``genai-qwen3vl chat`` command)."""
    command = [sys.executable, "-m", module] + (["chat"] if module == "genai_qwen3vl" else [])
    proc = subprocess.run([*command, *map(str, args)], input=stdin.encode() if stdin else None, capture_output=True, timeout=300)
    # bytes, decoded without newline translation: the answer may contain a "\r"
    proc.stdout, proc.stderr = proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")
    return proc


def test_one_shot_answer_equals_greedy_generation(exported, image_file):
    out = exported("awkward")
    path = image_file(96, 128, 1)
    proc = run_chat("-m", out, "--image", path, "-p", "What is this?", "--greedy", "--max_length", 60, "--timings")
    assert proc.returncode == 0, proc.stderr
    answer, timings = proc.stdout.split("Assistant: ", 1)[1].rsplit("\n[", 1)
    messages = [{"role": "user", "content": [{"type": "image", "image": str(path)}, {"type": "text", "text": "What is this?"}]}]
    processor = Qwen3VLProcessor(out)
    prompt = processor.apply_chat_template(messages)
    prompt_len = processor.process(prompt, images=[path]).input_ids.shape[1]
    expected = og_generate(out, prompt, [str(path)], steps=60 - prompt_len, processor="ours")
    # the chat stops at eos or max_length; og_generate runs on, so the answer is a prefix
    stream = og.Tokenizer(og_model(out)).create_stream()
    streamed = "".join(stream.decode(t) for t in expected.tokens)
    assert answer.rstrip("\n") and streamed.startswith(answer.rstrip("\n"))
    # --timings: what it promises, with the prompt length the processor computed
    assert timings.startswith(f"{prompt_len} prompt tokens, prefill ") and " tokens/s, total " in timings, timings


def test_interactive_two_turns_with_video_then_text(exported, tmp_path, image_file):
    frames = np.stack([np.full((64, 96, 3), 40 * i, np.uint8) for i in range(6)])
    video = write_video(tmp_path / "clip.mp4", frames, fps=6)
    turns = f"{image_file(64, 64, 2)}\n{video}\nWhat happens?\n\n\nAnd then?\n\n"
    proc = run_chat("-m", exported("awkward"), "--greedy", "--max_length", 400, stdin=turns)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("Assistant: ") == 2


def test_prompt_longer_than_max_length_is_one_line_and_keeps_the_conversation(exported, image_file):
    out = exported("awkward")
    # one shot: one line, exit 2
    proc = run_chat("-m", out, "--image", image_file(96, 128, 1), "-p", "What is this?", "--max_length", 20)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("error: the conversation is ") and "raise --max_length" in proc.stderr
    # interactive: a turn too long for max_length is refused in one line and left out of the
    # conversation, which goes on: the next turn is answered
    long_text = "describe " * 60
    turns = f"\n\nHello there\n\n\n{long_text}\n\n\nAnd then?\n\n"
    proc = run_chat("-m", out, "--greedy", "--max_length", 120, stdin=turns)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    events = [line for line in proc.stdout.replace("Assistant: ", "\nAssistant: ").splitlines()
              if line.startswith("Assistant: ") or "error: " in line]
    assert [e.startswith("Assistant: ") for e in events] == [True, False, True], events
    assert "error: the conversation is " in events[1] and "raise --max_length" in events[1]


def test_stock_processor_and_errors(exported, image_file):
    out = exported("awkward")
    proc = run_chat("-m", out, "--processor", "stock", "--image", image_file(96, 128, 1), "-p", "Hi", "--greedy", "--max_length", 50)
    assert proc.returncode == 0, proc.stderr
    assert "Assistant: " in proc.stdout
    proc = run_chat("-m", out, "--image", "/nope.png", "-p", "Hi")
    assert proc.returncode == 2 and "/nope.png" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_chat("-m", out, "--processor", "stock", "--video", "/x.mp4", "-p", "Hi")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    proc = run_chat("-m", out.parent / "missing", "-p", "Hi")
    assert proc.returncode == 2 and proc.stderr.startswith("error: cannot load") and "Traceback" not in proc.stderr


def test_help_is_plain_text_and_names_the_program():
    for module, prog in (("genai_qwen3vl", "genai-qwen3vl chat"), ("genai_qwen3vl.runtime.chat", "python -m genai_qwen3vl.runtime.chat")):
        proc = run_chat("--help", module=module)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(f"usage: {prog} "), proc.stdout
        assert "``" not in proc.stdout and "--timings" in proc.stdout and "prefill" in proc.stdout


def test_sampling_defaults_come_from_genai_config():
    defaults = {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.0, "max_length": 8192}
    assert search_options(build_parser().parse_args(["-m", "x"]), defaults) == defaults
    opts = search_options(build_parser().parse_args(["-m", "x", "--greedy", "--top_k", "5"]), defaults)
    assert opts["do_sample"] is False and opts["top_k"] == 5 and opts["temperature"] == 0.7
