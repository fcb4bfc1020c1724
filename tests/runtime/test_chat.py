"""The chat sample: one-shot and interactive multi-turn, both processors, clear errors."""

import subprocess
import sys

import numpy as np
import onnxruntime_genai as og
import pytest

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
    events = [
        line
        for line in proc.stdout.replace("Assistant: ", "\nAssistant: ").splitlines()
        if line.startswith("Assistant: ") or "error: " in line
    ]
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


def test_the_folder_is_positional_or_dash_m_and_flags_take_both_spellings(exported, image_file):
    """`chat DIR` and `chat -m DIR`; dashed flags listed, the old underscore spellings still taken."""
    out, image = exported("awkward"), image_file(96, 128, 1)
    for args in ((out, "--max-length", 40, "--top-k", 5), ("-m", out, "--max_length", 40, "--top_k", 5)):
        proc = run_chat(*args, "--image", image, "-p", "Hi", "--greedy")
        assert proc.returncode == 0 and "Assistant: " in proc.stdout, (args, proc.stderr)
    helped = run_chat("--help").stdout
    assert "OUT_DIR" in helped and "-m MODEL, --model MODEL" in helped
    for flag in ("--max-length", "--do-sample", "--top-p", "--top-k", "--repetition-penalty", "--max-decode-pixels"):
        assert flag in helped and flag.replace("-", "_").replace("__", "--") not in helped, flag
    for args, needle in (((), "the folder to chat with is required"), ((out, "-m", out.parent), "two folders given")):
        proc = run_chat(*args, "-p", "Hi")
        assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    "flag,value,needle",
    [
        ("--temperature", "-1", "'temperature' must be >= 0.0, got -1.0"),
        ("--temperature", "nan", "'temperature' must be a finite number, got nan"),
        ("--temperature", "inf", "'temperature' must be a finite number, got inf"),
        ("--temperature", "2.5", "'temperature' must be <= 2.0, got 2.5"),
        ("--top-p", "0", "'top_p' must be > 0.0, got 0.0"),
        ("--top_p", "1.5", "'top_p' must be <= 1.0, got 1.5"),
        ("--top-k", "-2", "'top_k' must be >= -1, got -2"),
        ("--top-k", "1.5", "'1.5' is not an integer"),
        ("--repetition-penalty", "0", "'repetition_penalty' must be > 0.0, got 0.0"),
        ("--repetition-penalty", "-inf", "'repetition_penalty' must be a finite number, got -inf"),
        ("--max-length", "0", "must be >= 1, got 0"),
    ],
)
def test_sampling_flags_are_checked_when_parsed(capsys, flag, value, needle):
    from genai_qwen3vl.runtime.chat import main

    with pytest.raises(SystemExit) as exit_:
        main(["some_folder", f"{flag}={value}", "-p", "Hi"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and err.strip().splitlines()[-1].startswith("genai-qwen3vl chat: error: argument"), err


def test_the_generation_call_checks_sampling_too(exported, image_file):
    """ChatSession.reply (the library call behind the chat) refuses what the flags refuse, before
    generating and before the turn joins the conversation (no question left without an answer);
    temperature 0 is greedy, as in the server."""
    import io

    from genai_qwen3vl.runtime.chat import ChatError, ChatSession

    session = ChatSession(exported("awkward"), "ours", "Be brief.")
    before = [dict(m) for m in session.messages]
    inputs = session.inputs([image_file(64, 64, 2)], [], "Hi", 200)
    for bad in ({"temperature": -1.0}, {"top_p": float("nan")}, {"top_k": 2**40}, {"random_seed": -5}):
        with pytest.raises(ChatError, match="must be"):
            session.reply(inputs, {"max_length": 200, **bad})
        assert session.messages == before and session.images == []
    answer, _ = session.reply(inputs, {"max_length": 200, "do_sample": False}, out=io.StringIO())
    assert [m["role"] for m in session.messages] == ["system", "user", "assistant"] and len(session.images) == 1
    greedy = search_options(build_parser().parse_args(["x", "--temperature", "0"]), {"do_sample": True, "temperature": 0.7})
    assert greedy == {"do_sample": False}


def test_interactive_paths_are_checked_when_given(exported, image_file, tmp_path):
    """A missing image or video is named as soon as it is typed, and asked for again; in one-shot
    mode before the model loads."""
    missing = tmp_path / "missing.png"
    turns = f"{missing}\n{image_file(64, 64, 2)}\n{tmp_path / 'missing.mp4'}\n\nWhat is this?\n\n"
    proc = run_chat(exported("awkward"), "--greedy", "--max-length", 200, stdin=turns)
    assert proc.returncode == 0, proc.stderr
    before_prompt = proc.stdout.split("Prompt: ", 1)[0]
    assert f"error: {missing} does not exist" in before_prompt and "missing.mp4 does not exist" in before_prompt, proc.stdout
    assert proc.stdout.count("Assistant: ") == 1 and "Traceback" not in proc.stderr
    proc = run_chat(tmp_path / "no_model", "--image", missing, "-p", "Hi")
    assert proc.returncode == 2 and proc.stderr == f"error: {missing} does not exist\n", proc.stderr


def test_the_runtime_tier_does_not_import_the_command_module():
    """The runtime's commands take their argparse helpers from runtime/flags.py, never from
    genai_qwen3vl/cli.py (which composes every tier)."""
    import ast

    from ..helpers import ROOT

    importers = []
    for path in sorted((ROOT / "genai_qwen3vl" / "runtime").rglob("*.py")):
        package = ["genai_qwen3vl", *path.relative_to(ROOT / "genai_qwen3vl").parent.parts]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                names = [".".join([*base, *(node.module or "").split(".")]).strip(".")]
                names += [f"{names[0]}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            if "genai_qwen3vl.cli" in names:
                importers.append(str(path.relative_to(ROOT)))
    assert not importers, importers
