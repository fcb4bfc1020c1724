"""The batch job on a Ray cluster (``--ray [ADDRESS]``): Ray Data streams the rows through a pool of
actors, each holding one og model with as many threads as the CPUs Ray reserves for it; the driver
(this command) writes what comes back into the same atomic chunks as the local engine does.

    driver: rows still to answer -> ray.data.from_items (one row per block)
            -> map_batches(RayAnswerer, batch_size=1, ActorPoolStrategy(size=workers), num_cpus=threads)
            -> iter_rows -> ChunkStore (the first answer per id; the same resumable output)
    actor:  RowAnswerer(model folder) loaded once; an actor that dies is restarted by Ray and the
            row it held is retried (Ray's task retries); a row that still gets no answer is
            recorded as that row's error.

The model folder reaches the actors from a path every node can read (a shared file system), or,
with ``--ray-ship``, through Ray's object store once per node (a node-local copy under the system's
temporary folder, reused while the folder is unchanged), the rows' images and videos then travel
with the rows. The package itself must be installed on every node (as Ray needs for any library).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

from ...errors import ClusterError, FolderError
from ...model.folder import ExportedFolder
from ..ray_cluster import connect, ray_module
from .answer import RowAnswerer
from .pool import ATTEMPTS, EngineError, dead_row
from .table import Row

SHIP_ROOT = "genai-qwen3vl-ray"  # under the node's temporary folder


class RayUnavailable(EngineError):
    """Ray is not installed, or the cluster cannot be reached (one line: what to do)."""


def cluster_shape(address: str | None) -> list[int]:
    """Connects to (or starts) the cluster; the CPUs of each alive node."""
    try:
        return connect(address, "--ray")
    except ClusterError as exc:
        raise RayUnavailable(str(exc)) from None


def default_sizes(node_cpus: list[int], workers: int | None, threads: int | None) -> tuple[int, int]:
    """(actors, CPUs per actor): 4 threads per actor where the smallest node has them, and as many
    actors as the nodes hold."""
    smallest = max(1, min((c for c in node_cpus if c > 0), default=1))
    threads = threads or min(4, smallest)
    workers = workers or max(1, sum(c // threads for c in node_cpus))
    return workers, threads


class RayAnswerer:
    """A Ray Data actor: the og model loaded once; one row (as JSON) per call."""

    def __init__(self, model_dir: str, search: dict, max_tokens: int, threads: int, context: int | None, shipped: dict | None):
        folder = _local_copy(shipped) if shipped else Path(model_dir)
        try:
            ExportedFolder.open(folder)
        except FolderError as e:
            raise RuntimeError(
                f"{model_dir} is not readable on node {_node_name()} ({e}): "
                "put the model folder on a path every node shares, or pass --ray-ship"
            ) from None
        self.answerer = RowAnswerer(folder, search, max_tokens, threads, context)

    def __call__(self, batch: dict) -> dict:
        results = []
        for text, media in zip(batch["row"], batch["media"], strict=True):
            row = Row(**json.loads(text))
            with tempfile.TemporaryDirectory(prefix="genai-qwen3vl-row-") as scratch:
                if media:
                    row = _with_local_media(row, json.loads(media), Path(scratch))
                results.append(json.dumps(self.answerer.answer(row), ensure_ascii=False))
        return {"result": results}


class RayPool:
    """``workers`` actors of ``threads`` CPUs each on the cluster at ``address``; ``run(rows,
    on_result)`` answers them, as LocalPool does."""

    def __init__(
        self,
        model_dir: str | Path,
        search: dict,
        max_tokens: int,
        workers: int,
        threads: int,
        context: int | None = None,
        address: str | None = None,
        ship: bool = False,
    ):
        self.model_dir, self.search, self.max_tokens = str(Path(model_dir).resolve()), search, max_tokens
        self.workers, self.threads, self.context, self.address, self.ship = workers, threads, context, address, ship
        self.keep: list = []  # the shipped files' object refs: alive while actors may (re)start

    def run(self, rows: Iterable[Row], on_result: Callable[[dict], None]) -> None:
        _ray()
        import ray.data

        rows = list(rows)
        if not rows:
            return
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the command draws its own
        context.print_on_execution_start = False
        context.max_errored_blocks = -1  # a row whose retries all failed is that row's error, not the job's
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        shipped = self._ship() if self.ship else None
        items = [{"row": json.dumps(dataclasses.asdict(row)), "media": _media_of(row) if self.ship else ""} for row in rows]
        data = ray.data.from_items(items, override_num_blocks=len(items))  # one row per block: one row per task and retry
        with warnings.catch_warnings():
            # max_task_retries has no named parameter in Ray 2.60, and **ray_remote_args is deprecated for 2.64 (setup.py: ray<2.64)
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
            answered = self._map(data, shipped, min(self.workers, len(rows)))
        seen: set[str] = set()
        try:
            for record in answered.iter_rows():
                result = json.loads(record["result"])
                if result["id"] not in seen:  # a retried row answered twice counts once
                    seen.add(result["id"])
                    on_result(result)
        except Exception as exc:  # noqa: BLE001 - Ray's errors: an actor that cannot load the model, a lost cluster
            raise EngineError(_ray_message(exc)) from None
        for row in rows:
            if row.id not in seen:  # its retries were used up (actors killed under it)
                on_result(dead_row(row, f"the Ray actor answering this row died {ATTEMPTS} times; it is skipped"))

    def _map(self, data, shipped: dict | None, actors: int):
        from ray.data import ActorPoolStrategy

        return data.map_batches(
            RayAnswerer,
            fn_constructor_kwargs={
                "model_dir": self.model_dir,
                "search": self.search,
                "max_tokens": self.max_tokens,
                "threads": self.threads,
                "context": self.context,
                "shipped": shipped,
            },
            batch_size=1,
            compute=ActorPoolStrategy(size=actors),
            num_cpus=self.threads,
            max_restarts=-1,  # an actor that dies comes back ...
            max_task_retries=ATTEMPTS - 1,  # ... and the row it held is tried once more
        )

    def _ship(self) -> dict:
        """The model folder's files put in the object store once; each node copies them on first use."""
        ray = _ray()
        folder = Path(self.model_dir)
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        digest = hashlib.sha256()
        for path in files:
            stat = path.stat()
            digest.update(f"{path.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
        refs = {str(path.relative_to(folder)): ray.put(path.read_bytes()) for path in files}
        self.keep = list(refs.values())
        return {"digest": digest.hexdigest()[:16], "files": refs}

    def close(self) -> None:
        self.keep = []


def _local_copy(shipped: dict) -> Path:
    """The shipped folder on this node: written once (a lock between the node's actors, then an
    atomic rename), reused by the node's later actors and jobs while its digest holds."""
    import fcntl

    ray = _ray()
    root = Path(tempfile.gettempdir()) / SHIP_ROOT
    root.mkdir(parents=True, exist_ok=True)
    target = root / shipped["digest"]
    with open(root / f"{shipped['digest']}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.is_dir():
            staging = Path(tempfile.mkdtemp(prefix=f".{shipped['digest']}-", dir=root))
            for name, ref in shipped["files"].items():
                path = staging / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(ray.get(ref))
            os.replace(staging, target)
    return target


def _media_of(row: Row) -> str:
    """The row's files, read here to travel with the row (base64 in JSON; a missing file stays missing)."""
    files = {}
    for path in row.images + row.videos:
        try:
            files[path] = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        except OSError:
            pass  # the actor reports it as the row's error, as the local engine does
    return json.dumps(files)


def _with_local_media(row: Row, files: dict, scratch: Path) -> Row:
    renamed = {}
    for number, (path, data) in enumerate(files.items()):
        local = scratch / f"{number}{Path(path).suffix}"
        local.write_bytes(base64.b64decode(data))
        renamed[path] = str(local)
    return dataclasses.replace(
        row,
        images=tuple(renamed.get(p, p) for p in row.images),
        videos=tuple(renamed.get(p, p) for p in row.videos),
    )


def _node_name() -> str:
    import socket

    return socket.gethostname()


def _ray_message(exc: BaseException) -> str:
    """The root cause of a Ray error, one line (Ray wraps an actor's exception in several layers)."""
    text = " ".join(str(exc).split())
    marker = "RuntimeError: "
    if marker in text:
        text = text[text.rindex(marker) + len(marker) :]
    return f"the Ray job failed: {text[:400]}"


def _ray():
    try:
        return ray_module("--ray")
    except ClusterError as exc:
        raise RayUnavailable(str(exc)) from None
