"""llama.cpp on the benchmark checkpoint, for ``benchmarks/run.py --llama-cpp DIR``.

``DIR`` is a llama.cpp source tree with its tools built (``build/bin``): the checkpoint is
converted by the tree's own ``convert_hf_to_gguf.py`` (f32 text model and the vision projector,
f32 and f16), quantized by ``llama-quantize`` (Q8_0, Q4_0, Q4_K_M) and measured by
``llama-bench`` (decode, prefill) and ``llama-mtmd-cli`` (image encode, time to first token).
Every tool runs as a subprocess; nothing of llama.cpp is copied here. Each tool's peak memory is
its own VmHWM, polled from /proc while it runs.

    python benchmarks/llama_cpp.py convert DIR CHECKPOINT --outfile X.gguf --outtype f32 [--mmproj]

runs the tree's converter with one change: a BPE pre-tokenizer it does not recognise (our tiny
tokenizer's) is taken as Qwen2's.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

TEXT_FORMATS = ("f32", "q8_0", "q4_0", "q4_k_m")  # f32 from the converter, the others from llama-quantize
PROJECTORS = ("f32", "f16")  # the vision projector (mmproj), both from the converter
TOOLS = ("llama-bench", "llama-mtmd-cli", "llama-quantize")
VISION_TEXT_FORMAT = "q4_0"  # llama-mtmd-cli needs a text model beside the projector: the smallest
MTMD_CONTEXT = 4096  # llama-mtmd-cli's default context is the model's (262144 tokens: an 8 GB KV cache)

BUILD_HELP = """\
--llama-cpp takes a llama.cpp source tree (convert_hf_to_gguf.py, gguf-py/) with three tools built in build/bin:
    pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 && tar xzf llama_cpp_python-0.3.36.tar.gz
    cd llama_cpp_python-0.3.36/vendor/llama.cpp   # or: git clone https://github.com/ggml-org/llama.cpp && cd llama.cpp
    cmake -B build -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DCMAKE_BUILD_TYPE=Release
    cmake --build build -j2 --target llama-bench llama-mtmd-cli llama-quantize   # about 7 minutes on 2 cores
and the converter needs sentencepiece in this Python: pip install sentencepiece"""


# --------------------------------------------------------------------------- the converter (run as a script)
def _converter_main(root: str, argv: list[str]) -> None:
    """The tree's convert_hf_to_gguf main. Its get_vocab_base_pre knows tokenizers by a hash of
    their output on a fixed text and refuses any other; an unknown one is taken as Qwen2's (as
    Qwen3.5's for a Qwen3.5 model: its split joins combining marks to letters)."""
    sys.path[:0] = [root, str(Path(root) / "gguf-py")]
    import convert_hf_to_gguf

    try:  # newer trees keep the model classes in a conversion/ package, older ones in the script
        from conversion.base import TextModel
    except ImportError:
        TextModel = convert_hf_to_gguf.TextModel
    known = TextModel.get_vocab_base_pre

    def vocab_base_pre(self, tokenizer) -> str:
        try:
            return known(self, tokenizer)
        except NotImplementedError:
            return "qwen35" if type(self).__name__.startswith("Qwen3_5") else "qwen2"

    TextModel.get_vocab_base_pre = vocab_base_pre
    sys.argv = ["convert_hf_to_gguf.py", *argv]
    convert_hf_to_gguf.main()


def _has_mtp_head(checkpoint: Path) -> bool:
    """Whether the checkpoint's architecture has a multi-token-prediction head (the one og's
    export leaves out with ``exclude_mtp``: Qwen3.5's), which the converter's ``--no-mtp`` leaves
    out too."""
    from genai_qwen3vl.model.spec import Qwen3VLSpec

    return dict(Qwen3VLSpec.from_checkpoint(Path(checkpoint)).architecture.og_extra_options).get("exclude_mtp") == "true"


# --------------------------------------------------------------------------- running a tool
@dataclasses.dataclass
class ToolRun:
    stdout: str
    stderr: str
    seconds: float
    peak_gb: float  # the tool's own VmHWM


def _vm_hwm_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return None  # gone, or a zombie (which has no memory lines)


def run_tool(cmd: list[str], poll_s: float = 0.005) -> ToolRun:
    """Run ``cmd`` to the end; its peak RSS is the last VmHWM read from /proc before it exits
    (VmHWM only grows). ru_maxrss would not do: it survives exec and under vfork counts the
    parent's pages."""
    with tempfile.TemporaryFile("w+", errors="replace") as out, tempfile.TemporaryFile("w+", errors="replace") as err:
        start = time.perf_counter()
        proc = subprocess.Popen([str(c) for c in cmd], stdout=out, stderr=err, text=True)
        peak_kb = 0
        while proc.poll() is None:
            peak_kb = _vm_hwm_kb(proc.pid) or peak_kb
            time.sleep(poll_s)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed (exit {proc.returncode}):\n{stderr[-4000:]}")
    return ToolRun(stdout, stderr, seconds, peak_kb / 2**20)


def _made(path: Path, make) -> None:
    """``make(part)`` writes ``path``'s content to ``part`` and returns its seconds; renamed into
    place when done, so that an interrupted run leaves no file that looks whole. Kept if there."""
    if path.is_file():
        return
    part = path.with_suffix(".part")
    seconds = make(part)
    part.rename(path)
    print(f"llama.cpp: {path.name} in {seconds:.0f} s ({path.stat().st_size / 2**30:.2f} GB)", flush=True)


# --------------------------------------------------------------------------- the tree
@dataclasses.dataclass(frozen=True)
class LlamaCpp:
    root: Path
    threads: int

    @classmethod
    def find(cls, path: Path, threads: int) -> "LlamaCpp":
        """The tree at ``path`` (its root; build/bin or bin given instead are walked up from), or
        SystemExit saying what is missing and how to build it."""
        root = Path(path).resolve()
        if root.name == "bin":
            root = root.parent.parent if root.parent.name == "build" else root.parent
        tree = cls(root, threads)
        missing = [
            str(p) for p in [root / "convert_hf_to_gguf.py", root / "gguf-py" / "gguf"] + [tree.tool(t) for t in TOOLS] if not p.exists()
        ]
        if importlib.util.find_spec("sentencepiece") is None:
            missing.append("the sentencepiece package")
        if missing:
            raise SystemExit(f"--llama-cpp {path}: missing " + ", ".join(missing) + "\n" + BUILD_HELP)
        return tree

    def tool(self, name: str) -> Path:
        return self.root / "build" / "bin" / name

    def commit(self) -> str:
        """The build's commit, as its tools report it."""
        out = run_tool([self.tool("llama-bench"), "--version"])
        found = re.search(r"commit ([0-9a-f]+)", out.stdout + out.stderr)
        return found.group(1) if found else "unknown"

    # ------------------------------------------------------------------- conversion
    def convert(self, checkpoint: Path, out: Path, outtype: str, mmproj: bool = False) -> float:
        """One GGUF from the checkpoint by the tree's converter; returns the seconds taken."""
        cmd = [sys.executable, __file__, "convert", self.root, checkpoint, "--outfile", out, "--outtype", outtype]
        if mmproj:
            cmd.append("--mmproj")
        elif _has_mtp_head(checkpoint):
            # Qwen3.5's converter adds the multi-token-prediction layers a released checkpoint carries;
            # og's export leaves them out, and the random checkpoints have none: without them here too
            cmd.append("--no-mtp")
        return run_tool(cmd).seconds

    def quantize(self, source: Path, out: Path, fmt: str) -> float:
        return run_tool([self.tool("llama-quantize"), source, out, fmt.upper(), self.threads]).seconds

    def prepare(self, checkpoint: Path, folder: Path) -> dict[str, dict[str, Path]]:
        """The text model in every format of TEXT_FORMATS and the projector in every format of
        PROJECTORS, made once into ``folder`` (files already there are kept):
        {"text": {format: path}, "mmproj": {format: path}}."""
        folder.mkdir(parents=True, exist_ok=True)
        files = {
            "text": {f: folder / f"text-{f}.gguf" for f in TEXT_FORMATS},
            "mmproj": {f: folder / f"mmproj-{f}.gguf" for f in PROJECTORS},
        }
        for fmt, path in files["text"].items():  # f32 first: the others are quantized from it
            if fmt == "f32":
                _made(path, lambda part, fmt=fmt: self.convert(checkpoint, part, fmt))
            else:
                _made(path, lambda part, fmt=fmt: self.quantize(files["text"]["f32"], part, fmt))
        for fmt, path in files["mmproj"].items():
            _made(path, lambda part, fmt=fmt: self.convert(checkpoint, part, fmt, mmproj=True))
        return files

    # ------------------------------------------------------------------- measurements
    def _bench(self, model: Path, *args) -> tuple[dict, float]:
        out = run_tool([self.tool("llama-bench"), "-m", model, "-t", self.threads, "-o", "json", *args])
        return json.loads(out.stdout)[0], out.peak_gb

    def decode(self, model: Path, prompt_tokens: int, steps: int, repetitions: int = 1) -> dict:
        """llama-bench: ``steps`` tokens generated after a ``prompt_tokens``-token context."""
        r, peak = self._bench(model, "-p", 0, "-n", steps, "-d", prompt_tokens, "-r", repetitions)
        return {"tokens_per_s": r["avg_ts"], "peak_gb": peak}

    def prefill(self, model: Path, prompt_tokens: int, repetitions: int = 1) -> dict:
        """llama-bench: one ``prompt_tokens``-token prompt processed, no token generated."""
        r, peak = self._bench(model, "-p", prompt_tokens, "-n", 0, "-r", repetitions)
        return {"tokens_per_s": r["avg_ts"], "peak_gb": peak}

    def image_prompt(self, model: Path, projector: Path, image: Path, text: str) -> dict:
        """llama-mtmd-cli, one image and ``text`` in its chat template, one token generated.

        * ``encode_ms``: "mtmd batch encoding done in N ms", the projector's encode of the image;
        * ``ttft_ms``: llama.cpp's "prompt eval time". Its clock starts at the first prompt chunk
          (the chat text before the image) and stops when the last prompt position's logits are
          read, so it spans the image encode, the image tokens' and the text's decode: the time
          to the first token, less reading and resizing the PNG (a few ms);
        * ``prompt_tokens``, ``image_tokens``; ``peak_gb``, the process's VmHWM (text model,
          projector and the encode's buffers)."""
        out = run_tool(
            [
                self.tool("llama-mtmd-cli"),
                "-m",
                model,
                "--mmproj",
                projector,
                "--image",
                image,
                "-p",
                text,
                "-n",
                1,
                "-t",
                self.threads,
                "-c",
                MTMD_CONTEXT,
                "--temp",
                0,
                "-lv",
                4,
            ]
        )
        log = out.stderr
        encode = re.search(r"mtmd batch encoding done in (\d+) ms", log)
        prompt = re.search(r"prompt eval time =\s*([\d.]+) ms /\s*(\d+) tokens", log)
        if not (encode and prompt):
            raise SystemExit(f"llama-mtmd-cli printed no encode or prompt timings:\n{log[-4000:]}")
        return {
            "encode_ms": float(encode.group(1)),
            "ttft_ms": float(prompt.group(1)),
            "prompt_tokens": int(prompt.group(2)),
            "image_tokens": sum(int(n) for n in re.findall(r"n_tokens_batch = (\d+)", log)),
            "peak_gb": out.peak_gb,
        }


# --------------------------------------------------------------------------- weights of a GGUF file
GGUF_TO_HF = {
    "attn_q": "model.language_model.layers.{i}.self_attn.q_proj.weight",
    "attn_k": "model.language_model.layers.{i}.self_attn.k_proj.weight",
    "attn_v": "model.language_model.layers.{i}.self_attn.v_proj.weight",
    "attn_output": "model.language_model.layers.{i}.self_attn.o_proj.weight",
    "ffn_gate": "model.language_model.layers.{i}.mlp.gate_proj.weight",
    "ffn_up": "model.language_model.layers.{i}.mlp.up_proj.weight",
    "ffn_down": "model.language_model.layers.{i}.mlp.down_proj.weight",
}
from genai_qwen3vl.verify.reference import EMBED_TOKENS  # noqa: E402


def hf_name(gguf_name: str) -> str | None:
    """transformers' name of a GGUF text-model matrix; None for the norms (not quantized)."""
    if gguf_name == "token_embd.weight":
        return EMBED_TOKENS
    if gguf_name == "output.weight":
        return "lm_head.weight"
    found = re.fullmatch(r"blk\.(\d+)\.(\w+)\.weight", gguf_name)
    if found and found.group(2) in GGUF_TO_HF:
        return GGUF_TO_HF[found.group(2)].format(i=int(found.group(1)))
    return None


class GGUFWeights(Mapping):
    """A GGUF text model's matrices, dequantized to float32 one at a time when read, by
    transformers' name and in its [out, in] layout. A tied model (no output.weight) multiplies
    by token_embd for its LM head: both names are given to it."""

    def __init__(self, path: Path, root: Path):
        if str(root / "gguf-py") not in sys.path:
            sys.path.insert(0, str(root / "gguf-py"))
        import gguf

        self._gguf = gguf
        tensors = {t.name: t for t in gguf.GGUFReader(str(path)).tensors}
        self._tensors = {hf_name(n): t for n, t in tensors.items() if hf_name(n)}
        if "lm_head.weight" not in self._tensors:
            self._tensors["lm_head.weight"] = tensors["token_embd.weight"]

    def __getitem__(self, name: str):
        t = self._tensors[name]
        return self._gguf.quants.dequantize(t.data, t.tensor_type).astype("float32", copy=False)

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def type_of(self, name: str) -> str:
        return self._tensors[name].tensor_type.name


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] != "convert":
        raise SystemExit(__doc__)
    _converter_main(sys.argv[2], sys.argv[3:])
