"""An exported folder, opened once: ``genai_config.json`` as typed fields, and ``manifest.json``
(how the folder was made: by which version, from which checkpoint, with which options and
libraries, and what its validation measured) when it has one.

Everything that reads an exported folder (the processor, chat, the server, validation, the
benchmarks) reads it through ``ExportedFolder.open``; ``tests/model/test_folder.py`` fails if
another module parses ``genai_config.json`` itself. The export writes both files
(``export/configs.py`` builds them); ``--validate`` adds its summary with ``record_validation``.
Folders exported before the manifest existed still open: ``manifest`` is None, and what the
manifest would say about the precision is read from the decoder graph (``precision_from_graph``,
a few fields of its protobuf read directly; ``verify/validate.py`` reads it with onnx).

Model tier: the standard library only (no og, no onnx).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import tempfile
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from ..errors import CheckpointError, FolderError
from .architectures import Architecture, architecture, architecture_of_og_type
from .precisions import target

GENAI_CONFIG = "genai_config.json"
MANIFEST = "manifest.json"
# the manifest's format; a reader refuses a newer one (its fields may mean something else)
MANIFEST_VERSION = 1
WRITER = "builder_qwen3vl.py"
_FIX = f"give the folder written by {WRITER}"
_AGAIN = f"export the folder again with {WRITER}"

# What runs a folder: onnxruntime-genai in this range (setup.py's RUNTIME and its cuda extra pin
# the same; a test keeps them in step), from the distribution built for the folder's provider.
OG_VERSIONS = ">=0.18,<0.19"
OG_DISTRIBUTIONS = {"cpu": "onnxruntime-genai", "cuda": "onnxruntime-genai-cuda"}
INSTALL = {
    "cpu": "pip install genai-qwen3vl",
    "cuda": 'pip install "genai-qwen3vl[cuda]" && pip uninstall onnxruntime-genai onnxruntime',
}
# what some uses need beyond that: extra -> (what for, the install command)
EXTRAS = {
    "video": ("video files (chat --video, the processor's videos=[path])", 'pip install "genai-qwen3vl[video]"'),
    "serve": ("genai-qwen3vl serve (the OpenAI-compatible server and its page)", 'pip install "genai-qwen3vl[serve]"'),
}


def _frozen(value: Any) -> Any:
    """A read-only deep copy of parsed JSON (mappings stay mappings, lists become tuples)."""
    if isinstance(value, dict):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


def _plain(value: Any) -> Any:
    """``_frozen``'s inverse: dicts and lists again (what json.dumps takes)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise FolderError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); {_AGAIN}") from None
    except UnicodeDecodeError:
        raise FolderError(f"{path} is not UTF-8 text; {_AGAIN}") from None
    except OSError as exc:
        raise FolderError(f"{path} cannot be read ({exc.strerror or exc}); {_FIX}") from None
    if not isinstance(data, dict):
        raise FolderError(f"{path} holds a JSON {type(data).__name__}, not an object; {_AGAIN}")
    return data


class _Fields:
    """Typed reads from one parsed JSON file; a FolderError naming the file and the key otherwise."""

    _MISSING = object()

    def __init__(self, path: Path, data: dict[str, Any]):
        self.path, self.data = path, data

    def get(self, dotted: str, kind: type | tuple[type, ...], default: Any = _MISSING) -> Any:
        node: Any = self.data
        for key in dotted.split("."):
            if not isinstance(node, dict) or key not in node or node[key] is None:
                if default is not self._MISSING:
                    return default
                raise FolderError(f"{self.path} has no {dotted}; {_AGAIN}")
            node = node[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int in Python; a flag is never a count
        if not isinstance(node, kinds) or (isinstance(node, bool) and bool not in kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise FolderError(f"{self.path} {dotted} is {node!r}, not {names}; {_AGAIN}")
        return node

    def count(self, dotted: str) -> int | None:
        """A positive number; None where it is 0 or absent (og's own default then)."""
        return self.get(dotted, int, 0) or None

    def ids(self, dotted: str) -> tuple[int, ...]:
        """One token id or a list of them (og takes either)."""
        value = self.get(dotted, (int, list))
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise FolderError(f"{self.path} {dotted} is {value!r}, not a token id or a list of them; {_AGAIN}")
        return tuple(values)


@dataclasses.dataclass(frozen=True)
class GraphSection:
    """One graph of the folder as genai_config.json points og at it (``decoder``, ``embedding``, ``vision``)."""

    name: str
    filename: str
    session_options: Mapping[str, Any]

    @property
    def provider(self) -> str:
        """The execution provider og runs this graph on: the first entry of ``provider_options``, else the CPU."""
        for entry in self.session_options.get("provider_options") or ():
            for name in entry:
                return str(name)
        return "cpu"

    @classmethod
    def read(cls, fields: _Fields, name: str) -> "GraphSection":
        options = fields.get(f"model.{name}.session_options", dict, {})
        providers = options.get("provider_options") or []
        if not isinstance(providers, list) or not all(isinstance(p, dict) for p in providers):
            key = f"model.{name}.session_options.provider_options"
            raise FolderError(f"{fields.path} {key} is {providers!r}, not a list of objects; {_AGAIN}")
        return cls(name, fields.get(f"model.{name}.filename", str), _frozen(options))


@dataclasses.dataclass(frozen=True)
class CheckpointSource:
    """Where the exported checkpoint came from: a hub id (and the revision downloaded) or a local folder."""

    hub_id: str | None
    revision: str | None
    local_path: str | None
    config_sha256: str  # of the checkpoint's config.json, byte for byte

    def describe(self) -> str:
        where = f"{self.hub_id}@{self.revision or '?'}" if self.hub_id else str(self.local_path)
        return f"{where} (config.json sha256 {self.config_sha256})"


@dataclasses.dataclass(frozen=True)
class Manifest:
    """``manifest.json``: how the folder was made (see ``export/configs.manifest``)."""

    manifest_version: int
    genai_qwen3vl_version: str
    architecture: str  # the transformers class exported (the registry's key)
    precision: str
    provider: str
    options: Mapping[str, Any]  # every ExportOptions field, as given
    versions: Mapping[str, str]  # distribution -> version of what made the folder
    source: CheckpointSource
    validation: Mapping[str, Any] | None  # --validate's summary (``record_validation``); None: not validated

    @classmethod
    def read(cls, path: Path) -> "Manifest":
        f = _Fields(path, _read_json(path))
        version = f.get("manifest_version", int)
        if version > MANIFEST_VERSION:
            raise FolderError(
                f"{path} has manifest_version {version}, newer than this genai-qwen3vl reads ({MANIFEST_VERSION}); "
                "upgrade genai-qwen3vl (pip install -U genai-qwen3vl)"
            )
        precision, provider = f.get("precision", str), f.get("provider", str)
        try:
            target(precision, provider)
        except ValueError as exc:
            raise FolderError(f"{path} names -p {precision} -e {provider}: {exc}") from None
        validation = f.get("validation", dict, None)
        return cls(
            manifest_version=version,
            genai_qwen3vl_version=f.get("genai_qwen3vl_version", str),
            architecture=f.get("architecture", str),
            precision=precision,
            provider=provider,
            options=_frozen(f.get("options", dict)),
            versions=_frozen(f.get("versions", dict)),
            source=CheckpointSource(
                hub_id=f.get("source.hub_id", str, None),
                revision=f.get("source.revision", str, None),
                local_path=f.get("source.local_path", str, None),
                config_sha256=f.get("source.config_sha256", str),
            ),
            validation=None if validation is None else _frozen(validation),
        )

    def as_dict(self) -> dict[str, Any]:
        """The manifest as JSON data (what ``genai-qwen3vl info --json`` prints)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["source"] = dataclasses.asdict(self.source)
        return _plain(data)


@dataclasses.dataclass(frozen=True)
class Requirements:
    """What a folder needs to run."""

    og_distribution: str  # onnxruntime-genai or onnxruntime-genai-cuda
    og_versions: str
    install: str
    extras: Mapping[str, tuple[str, str]]  # extra -> (what for, the install command)


@dataclasses.dataclass(frozen=True)
class ExportedFolder:
    """A folder written by the export: genai_config.json's fields and the manifest (None when absent)."""

    path: Path
    architecture: Architecture
    og_model_type: str
    decoder: GraphSection
    embedding: GraphSection
    vision: GraphSection
    # og sizes inputs_embeds and image_features from this: (1+K)*H, DeepStack's channels included
    hidden_size: int
    head_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    context_length: int | None  # None: genai_config.json gives none (0 or absent)
    vocab_size: int | None
    eos_token_ids: tuple[int, ...]
    bos_token_id: int | None
    pad_token_id: int | None
    image_token_id: int
    video_token_id: int
    vision_start_token_id: int | None
    spatial_merge_size: int
    patch_size: int | None
    processor_config: str | None  # the vision section's ort-extensions pipeline (og's stock processor)
    # og's search defaults (from the checkpoint's generation_config.json at export)
    search: Mapping[str, Any]
    manifest: Manifest | None
    _config: Mapping[str, Any] = dataclasses.field(repr=False, compare=False)

    @classmethod
    def open(cls, path: str | Path) -> "ExportedFolder":
        """Read the folder's genai_config.json and manifest.json; a FolderError (a ValueError)
        naming the file and the fix when the folder is missing or either file is not what the
        export writes."""
        path = Path(path)
        if not path.exists():
            raise FolderError(f"{path} does not exist; {_FIX}")
        if not path.is_dir():
            raise FolderError(f"{path} is a file, not an exported folder; {_FIX}")
        config_path = path / GENAI_CONFIG
        if not config_path.is_file():
            raise FolderError(f"{path} holds no exported model (no {GENAI_CONFIG}); {_FIX}")
        data = _read_json(config_path)
        f = _Fields(config_path, data)
        og_type = f.get("model.type", str, "")
        try:
            arch = architecture_of_og_type(og_type, str(config_path))
        except ValueError as exc:
            raise FolderError(str(exc)) from None
        manifest_path = path / MANIFEST
        manifest = Manifest.read(manifest_path) if manifest_path.is_file() else None
        if manifest is not None:
            try:
                arch = architecture(manifest.architecture, str(manifest_path))
            except CheckpointError as exc:
                raise FolderError(str(exc)) from None
            if arch.og_model_type != og_type:
                raise FolderError(
                    f"{manifest_path} names {manifest.architecture}, whose folders declare model type {arch.og_model_type!r}, "
                    f"but {config_path} declares {og_type!r}; {_AGAIN}"
                )
        return cls(
            path=path,
            architecture=arch,
            og_model_type=og_type,
            decoder=GraphSection.read(f, "decoder"),
            embedding=GraphSection.read(f, "embedding"),
            vision=GraphSection.read(f, "vision"),
            hidden_size=f.get("model.decoder.hidden_size", int),
            head_size=f.get("model.decoder.head_size", int),
            num_hidden_layers=f.get("model.decoder.num_hidden_layers", int),
            num_attention_heads=f.get("model.decoder.num_attention_heads", int),
            num_key_value_heads=f.get("model.decoder.num_key_value_heads", int),
            context_length=f.count("model.context_length"),
            vocab_size=f.count("model.vocab_size"),
            eos_token_ids=f.ids("model.eos_token_id"),
            bos_token_id=f.get("model.bos_token_id", int, None),
            pad_token_id=f.get("model.pad_token_id", int, None),
            image_token_id=f.get("model.image_token_id", int),
            video_token_id=f.get("model.video_token_id", int),
            vision_start_token_id=f.get("model.vision_start_token_id", int, None),
            spatial_merge_size=f.get("model.vision.spatial_merge_size", int),
            patch_size=f.get("model.vision.patch_size", int, None),
            processor_config=f.get("model.vision.config_filename", str, None),
            search=_frozen(f.get("search", dict, {})),
            manifest=manifest,
            _config=_frozen(data),
        )

    @property
    def genai_config_path(self) -> Path:
        return self.path / GENAI_CONFIG

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    @property
    def provider(self) -> str:
        """The execution provider the folder was exported for (the manifest's, else the decoder's)."""
        return self.manifest.provider if self.manifest is not None else self.decoder.provider

    @property
    def precision(self) -> str | None:
        """The manifest's ``-p``; None without a manifest (``verify.validate.exported_target`` reads the graphs then)."""
        return self.manifest.precision if self.manifest is not None else None

    def genai_config(self) -> dict[str, Any]:
        """genai_config.json as parsed, a private copy (to write a variant of the folder)."""
        return _plain(self._config)

    def files(self) -> list[tuple[str, int]]:
        """(name, bytes) of the folder's files, by name."""
        return sorted((p.name, p.stat().st_size) for p in self.path.iterdir() if p.is_file())

    def requirements(self) -> Requirements:
        provider = self.provider if self.provider in OG_DISTRIBUTIONS else "cpu"
        return Requirements(OG_DISTRIBUTIONS[provider], OG_VERSIONS, INSTALL[provider], EXTRAS)

    def precision_from_graph(self) -> str | None:
        """The decoder's precision as its graph says it (what a folder without a manifest can
        tell): int4 where it has MatMulNBits nodes, else the float type of its ``inputs_embeds``;
        None where the graph cannot be read that way (absent, damaged, weights stored inside)."""
        path = self.path / self.decoder.filename
        try:
            if path.stat().st_size > _GRAPH_READ_LIMIT:
                return None
            return _decoder_precision(memoryview(path.read_bytes()))
        except (OSError, IndexError, ValueError):
            return None


# --------------------------------------------------------------------------- the decoder graph, read without onnx
# A graph whose weights live in its .data file is small; one larger than this holds its weights inline.
_GRAPH_READ_LIMIT = 256 << 20
# onnx.TensorProto data types -> our float names
_ONNX_FLOATS = {1: "fp32", 10: "fp16", 16: "bf16"}
# field numbers in onnx.proto: ModelProto.graph, GraphProto.node / .input, NodeProto.op_type,
# ValueInfoProto.name / .type, TypeProto.tensor_type, TypeProto.Tensor.elem_type
_MODEL_GRAPH, _GRAPH_NODE, _GRAPH_INPUT, _NODE_OP_TYPE = 7, 1, 11, 4
_VALUE_NAME, _VALUE_TYPE, _TYPE_TENSOR, _TENSOR_ELEM_TYPE = 1, 2, 1, 1


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7


def _protobuf_fields(buf: memoryview):
    """(field number, value) of one protobuf message: an int for varints, a memoryview for
    length-delimited fields, None for fixed-size ones (not needed here)."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i : i + size], i + size
        elif wire in (1, 5):
            value, i = None, i + (8 if wire == 1 else 4)
        else:
            raise ValueError(f"protobuf wire type {wire}")
        yield field, value


def _first(buf: memoryview, field: int):
    return next((v for f, v in _protobuf_fields(buf) if f == field), None)


def _decoder_precision(model: memoryview) -> str | None:
    graph = _first(model, _MODEL_GRAPH)
    if graph is None:
        return None
    embeds_type = None
    for field, value in _protobuf_fields(graph):
        if field == _GRAPH_NODE and bytes(_first(value, _NODE_OP_TYPE) or b"") == b"MatMulNBits":
            return "int4"
        if field == _GRAPH_INPUT and bytes(_first(value, _VALUE_NAME) or b"") == b"inputs_embeds":
            tensor = _first(_first(value, _VALUE_TYPE) or memoryview(b""), _TYPE_TENSOR)
            embeds_type = None if tensor is None else _first(tensor, _TENSOR_ELEM_TYPE)
    return _ONNX_FLOATS.get(embeds_type)


def is_exported_folder(path: str | Path) -> bool:
    """Whether ``path`` looks like an export (has genai_config.json), without reading it."""
    return (Path(path) / GENAI_CONFIG).is_file()


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    """Write ``path`` through a temporary file beside it and one rename: a reader sees the old
    file or the new one, never half of one. The file keeps the mode the old one had."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(json.dumps(data, indent=4) + "\n")
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def record_validation(path: str | Path, summary: dict[str, Any]) -> bool:
    """Put ``--validate``'s summary into the folder's manifest.json (atomically), replacing an
    earlier one. False, and nothing written, for a folder without a manifest."""
    manifest_path = Path(path) / MANIFEST
    if not manifest_path.is_file():
        return False
    Manifest.read(manifest_path)  # refuse to rewrite a manifest this version does not understand
    data = _read_json(manifest_path)
    data["validation"] = copy.deepcopy(summary)
    write_json_atomically(manifest_path, data)
    return True
