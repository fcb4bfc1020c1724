"""The batch job's input: rows read from a folder of images and videos or from a table.

A folder: every image (``IMAGE_SUFFIXES``) and video (``VIDEO_SUFFIXES``) file under it, sorted by
path; each is one row whose id is its path relative to the folder, asked ``--prompt``.

A table (``.jsonl``, ``.csv``, ``.parquet``), one row per line or record, with the columns

    id               a string or an integer, unique in the table (required)
    image            a path, or a list of paths (JSONL, Parquet; in a CSV a JSON list) (optional)
    video            the same, for videos (optional)
    prompt           the question (required unless --prompt gives one for every row)
    system           a system prompt (optional)
    max_tokens       the answer's token limit for this row (optional)
    response_format  OpenAI's {"type": "json_object"} or {"type": "json_schema", "json_schema":
                     {"name", "schema"}} (optional; in a CSV, its JSON text)

Paths are relative to the table's folder unless absolute. What is wrong with the table as a whole
(an unknown format, a missing column, a duplicate id) is a TableError before anything runs; what
is wrong with one row's content (a missing file, a corrupt image) is that row's error at its turn.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any, Iterator

from ...errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi")
TABLE_SUFFIXES = (".jsonl", ".csv", ".parquet")
COLUMNS = ("id", "image", "video", "prompt", "system", "max_tokens", "response_format")


class TableError(InputError):
    """The input cannot be read as rows; the message names the file, the row and the fix."""


@dataclasses.dataclass(frozen=True)
class Row:
    id: str
    prompt: str
    images: tuple[str, ...] = ()
    videos: tuple[str, ...] = ()
    system: str | None = None
    max_tokens: int | None = None
    response_format: dict | None = None


def read_rows(source: str | Path, prompt: str | None = None) -> list[Row]:
    """The rows of a folder or a table, in order."""
    source = Path(source)
    if not source.exists():
        raise TableError(f"{source} does not exist; give a folder of images and videos, or a .jsonl, .csv or .parquet table")
    if source.is_dir():
        return _folder_rows(source, prompt)
    suffix = source.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise TableError(f"{source}: unknown input format {suffix or '(no suffix)'}; give a folder, or a .jsonl, .csv or .parquet table")
    records = {".jsonl": _jsonl, ".csv": _csv, ".parquet": _parquet}[suffix](source)
    rows, seen = [], set()
    for number, record in records:
        row = _row(record, number, source, prompt)
        if row.id in seen:
            raise TableError(f"{source}, row {number}: the id {row.id!r} appears twice; ids must be unique")
        seen.add(row.id)
        rows.append(row)
    return rows


def _folder_rows(folder: Path, prompt: str | None) -> list[Row]:
    if not prompt:
        raise TableError(f"{folder} is a folder of media: give --prompt, the question asked of each file")
    rows = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        kind = path.suffix.lower()
        key = path.relative_to(folder).as_posix()
        if kind in IMAGE_SUFFIXES:
            rows.append(Row(key, prompt, images=(str(path),)))
        elif kind in VIDEO_SUFFIXES:
            rows.append(Row(key, prompt, videos=(str(path),)))
    if not rows:
        raise TableError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}) or videos ({', '.join(VIDEO_SUFFIXES)})")
    return rows


def _jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TableError(f"{path}, line {number}: not JSON ({exc})") from None
            if not isinstance(record, dict):
                raise TableError(f"{path}, line {number}: each line must be a JSON object with the columns {', '.join(COLUMNS)}")
            yield number, record


def _csv(path: Path) -> Iterator[tuple[int, dict]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "id" not in reader.fieldnames:
            raise TableError(f"{path}: the header must name the columns, 'id' among them ({', '.join(COLUMNS)})")
        for number, record in enumerate(reader, 2):
            out: dict[str, Any] = {}
            for key, value in record.items():
                if value is None or value == "":
                    continue
                if key in ("image", "video") and value.lstrip().startswith("["):
                    value = _json_cell(value, path, number, key)
                elif key == "response_format":
                    value = _json_cell(value, path, number, key)
                elif key == "max_tokens":
                    value = _int_cell(value, path, number, key)
                out[key] = value
            yield number, out


def _parquet(path: Path) -> Iterator[tuple[int, dict]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise TableError(f"{path}: reading Parquet needs pyarrow: pip install 'genai-qwen3vl[batch]'") from None
    table = pq.read_table(path)
    if "id" not in table.column_names:
        raise TableError(f"{path}: no 'id' column (columns: {', '.join(table.column_names)})")
    for number, record in enumerate(table.to_pylist(), 1):
        if isinstance(record.get("response_format"), str):
            record["response_format"] = _json_cell(record["response_format"], path, number, "response_format")
        yield number, {k: v for k, v in record.items() if v is not None}


def _json_cell(text: str, path: Path, number: int, key: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise TableError(f"{path}, row {number}: '{key}' is not JSON ({exc})") from None


def _int_cell(text: str, path: Path, number: int, key: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise TableError(f"{path}, row {number}: '{key}' must be a whole number, got {text!r}") from None


def _paths(value: Any, base: Path, where: str, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    values = value if isinstance(value, (list, tuple)) else [value]
    if not all(isinstance(v, str) and v for v in values):
        raise TableError(f"{where}: '{key}' must be a path or a list of paths")
    return tuple(str(p if Path(p).is_absolute() else base / p) for p in values)


def _row(record: dict, number: int, source: Path, prompt: str | None) -> Row:
    where = f"{source}, row {number}"
    unknown = sorted(set(record) - set(COLUMNS))
    if unknown:
        raise TableError(f"{where}: unknown columns {', '.join(unknown)} (the columns are {', '.join(COLUMNS)})")
    key = record.get("id")
    if isinstance(key, bool) or not isinstance(key, (str, int)) or key == "":
        raise TableError(f"{where}: 'id' must be a non-empty string or an integer")
    text = record.get("prompt", prompt)
    if not isinstance(text, str) or not text:
        raise TableError(f"{where}: no 'prompt' (give the column, or --prompt for every row)")
    system = record.get("system")
    if system is not None and not isinstance(system, str):
        raise TableError(f"{where}: 'system' must be a string")
    max_tokens = record.get("max_tokens")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise TableError(f"{where}: 'max_tokens' must be a whole number of at least 1")
    fmt = record.get("response_format")
    if fmt is not None and not isinstance(fmt, dict):
        raise TableError(f"{where}: 'response_format' must be an object such as {{'type': 'json_object'}}")
    base = source.parent
    return Row(
        id=str(key),
        prompt=text,
        images=_paths(record.get("image"), base, where, "image"),
        videos=_paths(record.get("video"), base, where, "video"),
        system=system,
        max_tokens=max_tokens,
        response_format=fmt,
    )
