"""Multi-turn chat with an exported Qwen3-VL through stock onnxruntime-genai, in the style of
og's ``model-mm.py`` sample: images and videos by path, tokens streamed as they come.

    python -m genai_qwen3vl.chat -m OUT_DIR                      # interactive
    python -m genai_qwen3vl.chat -m OUT_DIR --image a.jpg --video v.mp4 -p "What happens?"   # one shot

``--processor ours`` (default) prepares inputs exactly as transformers does, videos included;
``--processor stock`` uses og's own multimodal processor (images only; some image sizes get
another patch grid than in transformers, see the README).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _split_paths(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


class ChatSession:
    """The conversation so far, and how to turn it into og inputs."""

    def __init__(self, model_dir: Path, processor: str, system: str | None):
        import onnxruntime_genai as og

        self.og = og
        self.model_dir = Path(model_dir)
        self.model = og.Model(str(self.model_dir))
        self.tokenizer = og.Tokenizer(self.model)
        self.kind = processor
        if processor == "ours":
            from .processing import Qwen3VLProcessor

            self.ours = Qwen3VLProcessor(self.model_dir)
        else:
            self.stock = self.model.create_multimodal_processor()
        self.messages: list[dict] = [{"role": "system", "content": system}] if system else []
        self.images: list[str] = []
        self.videos: list[str] = []
        self.search = json.loads((self.model_dir / "genai_config.json").read_text())["search"]

    def _prompt(self) -> str:
        if self.kind == "ours":
            return self.ours.apply_chat_template(self.messages, add_generation_prompt=True)
        return self.tokenizer.apply_chat_template(json.dumps(self.messages), add_generation_prompt=True)

    def inputs(self, images: list[str], videos: list[str], text: str):
        for path in images + videos:
            if not Path(path).is_file():
                raise ValueError(f"{path} does not exist")
        if videos and self.kind != "ours":
            raise ValueError("og's stock processor takes no videos for Qwen3-VL; use --processor ours")
        content = [{"type": "image", "image": p} for p in images] + [{"type": "video", "video": p} for p in videos]
        self.messages.append({"role": "user", "content": content + [{"type": "text", "text": text}]})
        all_images, all_videos = self.images + images, self.videos + videos
        try:
            prompt = self._prompt()
            if self.kind == "ours":
                # the template writes images and videos in message order; ours takes each kind in order
                inputs = self.ours(prompt, images=all_images, videos=all_videos)
            else:
                inputs = self.stock(prompt, images=self.og.Images.open(*all_images) if all_images else None)
        except Exception:
            self.messages.pop()
            raise
        self.images, self.videos = all_images, all_videos
        return inputs

    def reply(self, inputs, options: dict, out=sys.stdout) -> str:
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(**options)
        generator = self.og.Generator(self.model, params)
        generator.set_inputs(inputs)
        stream = self.tokenizer.create_stream()
        pieces = []
        while not generator.is_done():
            generator.generate_next_token()
            piece = stream.decode(generator.get_next_tokens()[0])
            pieces.append(piece)
            out.write(piece)
            out.flush()
        out.write("\n")
        answer = "".join(pieces)
        self.messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
        return answer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m genai_qwen3vl.chat", description=__doc__.split("\n\n")[0])
    parser.add_argument("-m", "--model", type=Path, required=True, help="folder written by builder_qwen3vl.py")
    parser.add_argument("--processor", choices=("ours", "stock"), default="ours", help="input preparation (default: ours)")
    parser.add_argument("--image", action="append", default=[], help="image path (repeatable); one-shot mode")
    parser.add_argument("--video", action="append", default=[], help="video path (repeatable); one-shot mode")
    parser.add_argument("-p", "--prompt", help="the question; given, the chat answers once and exits")
    parser.add_argument("--system", help="system prompt")
    parser.add_argument("--max_length", type=int, help="prompt + answer tokens (default: genai_config.json)")
    sampling = parser.add_mutually_exclusive_group()
    sampling.add_argument("--greedy", action="store_true", help="greedy decoding")
    sampling.add_argument("--do_sample", action="store_true", help="sample (default: genai_config.json's do_sample)")
    parser.add_argument("--temperature", type=float, help="default: genai_config.json (from generation_config.json)")
    parser.add_argument("--top_p", type=float, help="default: genai_config.json")
    parser.add_argument("--top_k", type=int, help="default: genai_config.json")
    parser.add_argument("--repetition_penalty", type=float, help="default: genai_config.json")
    parser.add_argument("--timings", action="store_true", help="print prefill/total time per answer")
    return parser


def search_options(args: argparse.Namespace, defaults: dict) -> dict:
    """The checkpoint's search defaults (genai_config.json), overridden by the flags given."""
    options = {k: defaults[k] for k in ("do_sample", "temperature", "top_p", "top_k", "repetition_penalty", "max_length") if k in defaults}
    if args.greedy:
        options["do_sample"] = False
    if args.do_sample:
        options["do_sample"] = True
    for key in ("temperature", "top_p", "top_k", "repetition_penalty", "max_length"):
        value = getattr(args, key)
        if value is not None:
            options[key] = value
    return options


def _turn(session: ChatSession, images, videos, text, options, timings: bool) -> None:
    start = time.perf_counter()
    inputs = session.inputs(images, videos, text)
    print("Assistant: ", end="", flush=True)
    session.reply(inputs, options)
    if timings:
        print(f"[{time.perf_counter() - start:.2f} s]")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        session = ChatSession(args.model, args.processor, args.system)
    except Exception as exc:  # og raises RuntimeError for unreadable folders
        print(f"error: cannot load {args.model}: {exc}", file=sys.stderr)
        return 2
    options = search_options(args, session.search)
    if args.prompt is not None:
        try:
            _turn(session, args.image, args.video, args.prompt, options, args.timings)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    print(f"Chatting with {args.model} ({args.processor} processor). Empty prompt or Ctrl-D quits.")
    while True:
        try:
            images = _split_paths(input("Image paths (comma separated; empty for none): "))
            videos = _split_paths(input("Video paths (comma separated; empty for none): ")) if args.processor == "ours" else []
            text = input("Prompt: ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if not text:
            return 0
        try:
            _turn(session, images, videos, text, options, args.timings)
        except ValueError as exc:
            print(f"error: {exc}")


if __name__ == "__main__":
    sys.exit(main())
