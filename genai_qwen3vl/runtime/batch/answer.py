"""One batch row answered: the checkpoint's chat template, ``Qwen3VLProcessor`` (transformers'
preprocessing), og's Generator through the generation primitive (a constraint where the row asks
for a response_format), and the text split as the server splits it (reasoning, content).

Whatever goes wrong with one row (a missing or corrupt file, an unreadable video, a prompt too long
for the context, a schema that cannot hold an answer) is that row's ``error``, one line; the job
goes on with the next row.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ...errors import InputError, PromptError
from ...model.folder import ExportedFolder
from ..constraints import Constraint, ConstraintChecker, ConstraintError
from ..generate import TokenStream, load_model
from ..processor import Qwen3VLProcessor
from ..serve.output import OutputSplitter
from .table import Row


def constraint_of(fmt: dict | None) -> Constraint | None:
    """A row's ``response_format`` (OpenAI's shapes) as a Constraint; a ConstraintError for any other."""
    if fmt is None or fmt.get("type") == "text":
        return None
    if fmt.get("type") == "json_object":
        return Constraint.json_object()
    spec = fmt.get("json_schema")
    if fmt.get("type") == "json_schema" and isinstance(spec, dict) and isinstance(spec.get("schema"), (dict, bool)):
        return Constraint.json_schema(spec["schema"])
    raise ConstraintError(
        "response_format must be {'type': 'json_object'} or {'type': 'json_schema', 'json_schema': {'name': ..., 'schema': {...}}}"
    )


class RowAnswerer:
    """The exported folder loaded once; ``answer(row)`` per row."""

    def __init__(self, model_dir: str | Path, search: dict, max_tokens: int, threads: int | None = None, context: int | None = None):
        self.folder = ExportedFolder.open(model_dir)
        self.model = load_model(Path(model_dir), threads)
        self.processor = Qwen3VLProcessor(self.folder)
        self.checker = ConstraintChecker.for_folder(self.folder)
        self.search = dict(search)
        self.max_tokens = max_tokens
        # prompt + answer tokens: as the server's --max-model-len, genai_config.json's max_length by default
        self.context = context or int(self.folder.search.get("max_length") or self.folder.context_length or 4096)
        self.eos = set(self.folder.eos_token_ids)

    def answer(self, row: Row) -> dict:
        start = time.perf_counter()
        out: dict = {"id": row.id, "text": None, "reasoning": None, "json": None, "tool_calls": None}
        out.update(prompt_tokens=None, completion_tokens=None, error=None)
        try:
            self._answer(row, out)
        except (ValueError, OSError) as exc:  # the row's input: missing, corrupt, too long, a bad schema
            out["error"] = _one_line(exc)
        except Exception as exc:  # noqa: BLE001 - og's RuntimeError and anything else: this row's error, not the job's
            out["error"] = f"{type(exc).__name__}: {_one_line(exc)}"
        out["seconds"] = round(time.perf_counter() - start, 4)
        return out

    def _answer(self, row: Row, out: dict) -> None:
        constraint = constraint_of(row.response_format)
        if constraint is not None:
            self.checker.check(constraint)
        for path in row.images + row.videos:
            if not Path(path).is_file():
                raise FileNotFoundError(f"{path} does not exist")
        content = [{"type": "image"} for _ in row.images] + [{"type": "video"} for _ in row.videos]
        messages = [{"role": "system", "content": row.system}] if row.system else []
        messages.append({"role": "user", "content": [*content, {"type": "text", "text": row.prompt}]})
        prompt = self.processor.apply_chat_template(messages)
        inputs = self.processor.process(prompt, images=list(row.images), videos=list(row.videos))
        n = int(inputs.input_ids.shape[1])
        out["prompt_tokens"] = n
        wanted = row.max_tokens or self.max_tokens
        if n + 1 > self.context:
            raise PromptError(f"the prompt is {n} tokens, which leaves no room for an answer within {self.context} (--max-model-len)")
        limit = min(n + wanted, self.context)
        thinking = prompt.rstrip().endswith("<think>")
        guidance = constraint.guidance(thinking) if constraint is not None else None
        with TokenStream(self.model, inputs.og_arrays(), {**self.search, "max_length": limit}, guidance=guidance) as stream:
            tokens = list(stream)
        out["completion_tokens"] = len(tokens)
        text = self.processor.tokenizer.decode(tokens, skip_special_tokens=True)  # the server's text (serve/detokenizer.py)
        split = OutputSplitter(thinking, parse_tools=False)
        events = split.feed(text) + split.finish()
        reasoning = "".join(v for kind, v in events if kind == "reasoning")
        out["reasoning"] = reasoning or None
        out["text"] = "".join(v for kind, v in events if kind == "content")
        if constraint is not None:
            try:
                out["json"] = json.loads(out["text"])
            except json.JSONDecodeError:
                raise InputError(f"the answer was cut at max_tokens ({wanted}) before its JSON was complete; raise max_tokens") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:500] or type(exc).__name__
