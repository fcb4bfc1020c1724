"""Multi-turn chat with an exported Qwen3-VL through stock onnxruntime-genai, in the style of og's
``model-mm.py`` sample: images and videos by path, tokens streamed as they come.

    genai-qwen3vl chat OUT_DIR                                          # interactive
    genai-qwen3vl chat OUT_DIR --image a.jpg --video v.mp4 -p "What happens?"   # one shot

(also ``python -m genai_qwen3vl.runtime.chat`` and ``examples/chat.py``). Needs no torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import InputError
from ..model.folder import ExportedFolder
from . import sampling
from .constraints import Constraint, ConstraintChecker
from .flags import add_flag, positive
from .generate import TokenStream
from .images import MAX_DECODE_PIXELS, check_image_size

DESCRIPTION = "Chat with a Qwen3-VL folder written by builder_qwen3vl.py, through stock onnxruntime-genai."
EPILOG = """examples:
  %(prog)s qwen3vl-2b-cpu                                   interactive, multi-turn
  %(prog)s qwen3vl-2b-cpu --image cat.jpg -p "What is this?"  one question, then exit
  %(prog)s qwen3vl-2b-cpu --video clip.mp4 -p "What happens?"
  %(prog)s qwen3vl-2b-cpu --image receipt.jpg -p "Total?" --json-schema receipt.schema.json
  %(prog)s qwen3vl-2b-cpu --image cat.jpg -p "Is it a cat?" --choice yes,no

--json-schema, --regex and --choice hold each answer to a JSON schema, a regular expression or one
of a few words (onnxruntime-genai's guidance); a Thinking checkpoint reasons freely first.

--processor ours (the default) prepares images and videos exactly as transformers does;
--processor stock uses onnxruntime-genai's own processor (images only; some image sizes get
another patch grid than in transformers, see the README)."""


class ChatError(InputError):
    """A turn that cannot be answered; the conversation so far is kept."""


def _split_paths(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def check_paths(images: list[str], videos: list[str], processor: str, max_decode_pixels: int) -> None:
    """A ChatError for a file that is missing, an image larger than ``max_decode_pixels`` (read
    from its header) or a video for og's stock processor: checked when the paths are given."""
    for path in images + videos:
        if not Path(path).is_file():
            raise ChatError(f"{path} does not exist")
    if videos and processor != "ours":
        raise ChatError("og's stock processor takes no videos for Qwen3-VL; use --processor ours")
    for path in images:
        check_image_size(path, max_decode_pixels)


class ChatSession:
    """The conversation so far, and how to turn it into og inputs."""

    def __init__(self, model_dir: Path, processor: str, system: str | None, max_decode_pixels: int = MAX_DECODE_PIXELS):
        import onnxruntime_genai as og

        self.og = og
        self.model_dir = Path(model_dir)
        self.model = og.Model(str(self.model_dir))
        self.tokenizer = og.Tokenizer(self.model)
        self.kind = processor
        if processor == "ours":
            from .processor import Qwen3VLProcessor

            self.ours = Qwen3VLProcessor(self.model_dir, max_decode_pixels=max_decode_pixels)
        else:
            self.stock = self.model.create_multimodal_processor()
        self.max_decode_pixels = max_decode_pixels
        self.messages: list[dict] = [{"role": "system", "content": system}] if system else []
        self.images: list[str] = []
        self.videos: list[str] = []
        self._pending: tuple | None = None  # (inputs, the user turn, all images, all videos, thinking) until reply
        folder = ExportedFolder.open(self.model_dir)
        self.search = dict(folder.search)
        self.checker = ConstraintChecker.for_folder(folder)

    def _prompt(self, messages: list[dict]) -> str:
        if self.kind == "ours":
            return self.ours.apply_chat_template(messages, add_generation_prompt=True)
        return self.tokenizer.apply_chat_template(json.dumps(messages), add_generation_prompt=True)

    def inputs(self, images: list[str], videos: list[str], text: str, max_length: int):
        """og inputs for the conversation with this turn; a ChatError when a file is missing or
        the prompt leaves no room for an answer. The turn joins the conversation only when
        ``reply`` accepts its options and answers it."""
        check_paths(images, videos, self.kind, self.max_decode_pixels)
        content = [{"type": "image", "image": p} for p in images] + [{"type": "video", "video": p} for p in videos]
        turn = {"role": "user", "content": content + [{"type": "text", "text": text}]}
        all_images, all_videos = self.images + images, self.videos + videos
        self._pending = None
        prompt = self._prompt([*self.messages, turn])
        if self.kind == "ours":
            # the template writes images and videos in message order; ours takes each kind in order
            inputs = self.ours(prompt, images=all_images, videos=all_videos)
        else:
            inputs = self.stock(prompt, images=self.og.Images.open(*all_images) if all_images else None)
        length = int(inputs["input_ids"].shape()[-1])
        if length >= max_length:
            raise ChatError(
                f"the conversation is {length} tokens, which leaves no room for an answer within max_length {max_length}; "
                "raise --max_length or start a new chat"
            )
        self._pending = (inputs, turn, all_images, all_videos, prompt.rstrip().endswith("<think>"))
        return inputs

    def reply(self, inputs, options: dict, out=sys.stdout, constraint: Constraint | None = None) -> tuple[str, dict]:
        """Stream the answer to ``out``; returns it and its timings (prefill = the first token).
        ``constraint``: structured output (after the reasoning, where the prompt opened
        ``<think>``). ``options`` and ``constraint`` are checked first: a ChatError leaves the
        conversation without the turn ``inputs`` prepared (and ``reply`` may be called again)."""
        try:
            sampling.check_search_options(options)
            if constraint is not None:
                self.checker.check(constraint)
        except ValueError as exc:
            raise ChatError(str(exc)) from None
        pending, self._pending = self._pending, None
        thinking = False
        if pending is not None and pending[0] is inputs:  # the turn joins the conversation
            _, turn, self.images, self.videos, thinking = pending
            self.messages.append(turn)
        guidance = constraint.guidance(thinking) if constraint is not None else None
        tokens = TokenStream(self.model, inputs, options, guidance=guidance)
        stream = self.tokenizer.create_stream()
        pieces = []
        for token in tokens:
            piece = stream.decode(token)
            pieces.append(piece)
            out.write(piece)
            out.flush()
        out.write("\n")
        answer = "".join(pieces)
        self.messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
        decode = tokens.decode_s
        timings = {
            "prompt_tokens": int(inputs["input_ids"].shape()[-1]),
            "prefill_s": tokens.prefill_s,
            "tokens": len(pieces),
            "decode_tokens_per_s": (len(pieces) - 1) / decode if len(pieces) > 1 and decode > 0 else 0.0,
            "total_s": tokens.prefill_s + decode,
        }
        return answer, timings


def build_parser(prog: str = "genai-qwen3vl chat") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model_dir", nargs="?", type=Path, metavar="OUT_DIR", help="folder written by builder_qwen3vl.py")
    parser.add_argument("-m", "--model", type=Path, help="the same as OUT_DIR")
    parser.add_argument("--processor", choices=("ours", "stock"), default="ours", help="input preparation (default: ours)")
    parser.add_argument("--image", action="append", default=[], help="image path (repeatable); one-shot mode")
    parser.add_argument("--video", action="append", default=[], help="video path (repeatable); one-shot mode")
    parser.add_argument("-p", "--prompt", help="the question; given, the chat answers once and exits")
    parser.add_argument("--system", help="system prompt")
    add_flag(parser, "max_length", type=positive(int), help="prompt + answer tokens (default: genai_config.json)")
    parser.add_argument("--max-model-len", dest="max_length", type=positive(int), default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    add_flag(
        parser,
        "max_decode_pixels",
        type=positive(int),
        default=MAX_DECODE_PIXELS,
        help="refuse images larger than this, from their header, before decoding them (default 8192x8192)",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--greedy", action="store_true", help="greedy decoding")
    add_flag(group, "do_sample", action="store_true", help="sample (default: genai_config.json's do_sample)")
    ranges = {name: sampling.BOUNDS[name] for name in ("temperature", "top_p", "top_k", "repetition_penalty")}
    for name, bound in ranges.items():
        low = f"{'(' if bound.low_open else '['}{bound.low:g}"
        add_flag(parser, name, type=sampling.argparse_type(name), help=f"in {low}, {bound.high:g}]; default: genai_config.json")
    parser.add_argument(
        "--timings", action="store_true", help="after each answer: prompt tokens, prefill time (to the first token), decode tokens/s"
    )
    held = parser.add_mutually_exclusive_group()
    add_flag(held, "json_schema", type=Path, metavar="FILE", help="each answer is JSON valid against the JSON schema in FILE")
    held.add_argument("--regex", help="each answer matches this regular expression (Rust regex syntax: no look-around)")
    held.add_argument("--choice", help="each answer is one of these comma-separated words")
    return parser


def constraint_of(args: argparse.Namespace) -> Constraint | None:
    """The answer's structured output from --json-schema / --regex / --choice, checked against
    the folder's tokenizer before og loads (a ChatError naming the flag and the problem)."""
    flag = "--json-schema" if args.json_schema is not None else "--regex" if args.regex is not None else "--choice"
    try:
        if args.json_schema is not None:
            try:
                text = args.json_schema.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ChatError(f"{flag}: cannot read {args.json_schema}: {exc}") from None
            constraint = Constraint.json_schema(text)
        elif args.regex is not None:
            constraint = Constraint.regex(args.regex)
        elif args.choice is not None:
            constraint = Constraint.choice([c.strip() for c in args.choice.split(",") if c.strip()])
        else:
            return None
    except ChatError:
        raise
    except ValueError as exc:
        raise ChatError(f"{flag}: {exc}") from None
    checker = ConstraintChecker.for_folder(ExportedFolder.open(args.model))  # a FolderError of its own
    try:
        checker.check(constraint)
    except ValueError as exc:
        raise ChatError(f"{flag}: {exc}") from None
    return constraint


def parse_args(argv: list[str] | None, prog: str) -> argparse.Namespace:
    """The flags; the folder given as OUT_DIR or -m (one of them)."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.model_dir is not None and args.model is not None and args.model_dir != args.model:
        parser.error(f"two folders given ({args.model_dir} and -m {args.model}); give one")
    args.model = args.model_dir or args.model
    if args.model is None:
        parser.error("the folder to chat with is required: genai-qwen3vl chat OUT_DIR")
    return args


def search_options(args: argparse.Namespace, defaults: dict) -> dict:
    """The checkpoint's search defaults (genai_config.json), overridden by the flags given;
    temperature 0 means greedy (as in the server)."""
    options = {k: defaults[k] for k in ("do_sample", "temperature", "top_p", "top_k", "repetition_penalty", "max_length") if k in defaults}
    if args.greedy:
        options["do_sample"] = False
    if args.do_sample:
        options["do_sample"] = True
    for key in ("temperature", "top_p", "top_k", "repetition_penalty", "max_length"):
        value = getattr(args, key)
        if value is not None:
            options[key] = value
    if options.get("temperature") == 0:
        options["do_sample"] = False
        del options["temperature"]
    return options


def _turn(session: ChatSession, images, videos, text, options, timings: bool, constraint: Constraint | None = None) -> None:
    inputs = session.inputs(images, videos, text, options["max_length"])
    print("Assistant: ", end="", flush=True)
    _, measured = session.reply(inputs, options, constraint=constraint)
    if timings:
        print(
            f"[{measured['prompt_tokens']} prompt tokens, prefill {measured['prefill_s']:.2f} s, "
            f"{measured['tokens']} tokens at {measured['decode_tokens_per_s']:.1f} tokens/s, total {measured['total_s']:.2f} s]"
        )


def main(argv: list[str] | None = None, prog: str = "genai-qwen3vl chat") -> int:
    args = parse_args(argv, prog)
    try:  # before the model loads
        check_paths(args.image, args.video, args.processor, args.max_decode_pixels)
        constraint = constraint_of(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        session = ChatSession(args.model, args.processor, args.system, args.max_decode_pixels)
    except (RuntimeError, ValueError, OSError) as exc:  # og raises RuntimeError for folders it cannot load
        print(f"error: cannot load {args.model}: {exc}", file=sys.stderr)
        return 2
    options = search_options(args, session.search)
    options.setdefault("max_length", 2048)
    if args.prompt is not None:
        try:
            _turn(session, args.image, args.video, args.prompt, options, args.timings, constraint)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    print(f"Chatting with {args.model} ({args.processor} processor). Empty prompt or Ctrl-D quits.")
    while True:
        try:
            images = _ask_paths("Image paths (comma separated; empty for none): ", args, image=True)
            videos = _ask_paths("Video paths (comma separated; empty for none): ", args, image=False) if args.processor == "ours" else []
            text = input("Prompt: ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if not text:
            return 0
        try:
            _turn(session, images, videos, text, options, args.timings, constraint)
        except ValueError as exc:
            print(f"error: {exc}")


def _ask_paths(question: str, args: argparse.Namespace, image: bool) -> list[str]:
    """Paths typed at ``question``, asked again until each one can be used."""
    while True:
        paths = _split_paths(input(question))
        try:
            check_paths(paths if image else [], [] if image else paths, args.processor, args.max_decode_pixels)
        except ValueError as exc:
            print(f"error: {exc}")
            continue
        return paths


if __name__ == "__main__":
    sys.exit(main(prog="python -m genai_qwen3vl.runtime.chat"))
