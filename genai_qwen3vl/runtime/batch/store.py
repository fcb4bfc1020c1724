"""The batch job's output: answered rows kept in atomic chunks beside the output file until the job
ends, then merged into it once, in the input's order.

    OUT.parts/chunk-<ns>-<pid>.jsonl    rows answered so far: each chunk written to a temporary
                                        name, flushed to disk, then renamed (a reader sees a whole
                                        chunk or none, whatever kills the job and whenever)
    OUT                                 written the same way when every row is answered; the
                                        chunks are removed after it

A rerun reads what the chunks (and an earlier OUT) hold and skips those rows, so each row is
written once however often the job is stopped: Ctrl-C, a crash, ``kill -9``, a full disk (the job
stops with one line naming the file; the rows written so far stay, the rerun goes on).

A row: ``id``, ``text`` (the answer), ``reasoning`` (a Thinking checkpoint's), ``json`` (the answer
parsed, where the row asked for a response_format), ``tool_calls``, ``prompt_tokens``,
``completion_tokens``, ``seconds`` and ``error`` (null, or why the row has no answer). In Parquet,
``json`` and ``tool_calls`` are their JSON text (a column holds one type).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Iterable

from ...errors import InputError

FIELDS = ("id", "text", "reasoning", "json", "tool_calls", "prompt_tokens", "completion_tokens", "seconds", "error")
OUTPUT_SUFFIXES = (".jsonl", ".parquet")


class StoreError(InputError):
    """The output cannot be written (a full disk, no permission) or read back; the message names the
    file and what to do. The rows already written stay."""


def _parquet_schema():
    import pyarrow as pa

    text = pa.string()
    return pa.schema(
        [
            ("id", text),
            ("text", text),
            ("reasoning", text),
            ("json", text),
            ("tool_calls", text),
            ("prompt_tokens", pa.int64()),
            ("completion_tokens", pa.int64()),
            ("seconds", pa.float64()),
            ("error", text),
        ]
    )


class ChunkStore:
    def __init__(self, output: str | Path):
        self.output = Path(output)
        suffix = self.output.suffix.lower()
        if suffix not in OUTPUT_SUFFIXES:
            raise StoreError(f"{self.output}: the output must end in .jsonl or .parquet")
        if suffix == ".parquet":
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise StoreError(f"{self.output}: writing Parquet needs pyarrow: pip install 'genai-qwen3vl[batch]'") from None
        if not self.output.parent.is_dir():
            raise StoreError(f"{self.output.parent} does not exist; create it, or give --output in a folder that does")
        self.parts = self.output.with_name(self.output.name + ".parts")

    # ------------------------------------------------------------------ reading back
    def done(self) -> dict[str, dict]:
        """The rows written so far, one per id: an earlier output's, then the chunks' in the order
        they were written (a row answered again, --retry-errors, replaces the earlier answer);
        files left half-written by a killed job (temporary names) are removed."""
        rows: dict[str, dict] = {}
        for leftover in self.output.parent.glob(f".tmp-{self.output.name}-*"):
            leftover.unlink(missing_ok=True)
        if self.output.is_file():
            for row in self._read_output():
                rows[row["id"]] = row
        if self.parts.is_dir():
            for leftover in self.parts.glob(".tmp-*"):
                leftover.unlink(missing_ok=True)
            for chunk in sorted(self.parts.glob("chunk-*.jsonl")):
                for row in _jsonl_rows(chunk):
                    rows[row["id"]] = row
        return rows

    def _read_output(self) -> list[dict]:
        try:
            if self.output.suffix.lower() == ".parquet":
                import pyarrow.parquet as pq

                rows = pq.read_table(self.output).to_pylist()
                for row in rows:
                    for key in ("json", "tool_calls"):
                        row[key] = json.loads(row[key]) if row.get(key) is not None else None
                return rows
            return list(_jsonl_rows(self.output))
        except (OSError, ValueError) as exc:
            raise StoreError(
                f"{self.output} cannot be read back as this command's output ({exc}); move it away or give another --output"
            ) from None

    # ------------------------------------------------------------------ writing
    def write(self, rows: list[dict]) -> None:
        """One chunk with ``rows``, atomically."""
        if not rows:
            return
        self.parts.mkdir(exist_ok=True)
        name = f"chunk-{time.time_ns():020d}-{os.getpid()}.jsonl"
        data = "".join(json.dumps({k: row.get(k) for k in FIELDS}, ensure_ascii=False) + "\n" for row in rows).encode()
        self._atomic(self.parts / name, data)

    def finish(self, order: Iterable[str]) -> int:
        """The output written whole, in ``order`` (the input's ids), from the rows written so far;
        then the chunks removed. Returns how many rows it holds."""
        done = self.done()
        rows = [done[key] for key in order if key in done]
        if self.output.suffix.lower() == ".parquet":
            import io

            import pyarrow as pa
            import pyarrow.parquet as pq

            flat = [
                {
                    k: (json.dumps(r.get(k), ensure_ascii=False) if k in ("json", "tool_calls") and r.get(k) is not None else r.get(k))
                    for k in FIELDS
                }
                for r in rows
            ]
            buffer = io.BytesIO()
            pq.write_table(pa.Table.from_pylist(flat, schema=_parquet_schema()), buffer)
            data = buffer.getvalue()
        else:
            data = "".join(json.dumps({k: r.get(k) for k in FIELDS}, ensure_ascii=False) + "\n" for r in rows).encode()
        self._atomic(self.output, data)
        shutil.rmtree(self.parts, ignore_errors=True)
        return len(rows)

    def _atomic(self, path: Path, data: bytes) -> None:
        tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
            directory = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreError(
                f"cannot write {path}: {exc.strerror or exc}; the rows written so far are kept: "
                "make room (or fix the folder's permissions) and run the same command again to go on"
            ) from None


def _parquet_value(key: str, value):
    """A row's field as its Parquet column holds it: ``json`` and ``tool_calls`` as JSON text."""
    return json.dumps(value, ensure_ascii=False) if key in ("json", "tool_calls") and value is not None else value


def _jsonl_rows(path: Path):
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                row = json.loads(line)
                if isinstance(row, dict) and isinstance(row.get("id"), str):
                    yield row
