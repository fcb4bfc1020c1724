"""``model/folder.py``: an exported folder opened once, its genai_config.json as typed fields and its
manifest.json; damaged folders refused with one line naming the file and the fix; and the guard
that no other module parses genai_config.json (or manifest.json) itself."""

from __future__ import annotations

import ast
import json
import shutil
import stat
from pathlib import Path

import pytest

from genai_qwen3vl.errors import FolderError
from genai_qwen3vl.model.architectures import QWEN3_VL
from genai_qwen3vl.model.folder import (
    GENAI_CONFIG,
    MANIFEST,
    MANIFEST_VERSION,
    OG_DISTRIBUTIONS,
    OG_VERSIONS,
    ExportedFolder,
    is_exported_folder,
    record_validation,
)

from ..helpers import ROOT

PRESET = "awkward"


def test_open_reads_what_genai_config_says(exported):
    out = exported(PRESET)
    raw = json.loads((out / GENAI_CONFIG).read_text())
    model = raw["model"]
    folder = ExportedFolder.open(out)
    assert folder.path == out and is_exported_folder(out)
    assert folder.architecture is QWEN3_VL and folder.og_model_type == model["type"] == "qwen3_vl"
    assert folder.hidden_size == model["decoder"]["hidden_size"] and folder.head_size == model["decoder"]["head_size"]
    assert folder.num_hidden_layers == model["decoder"]["num_hidden_layers"]
    assert folder.eos_token_ids == tuple(model["eos_token_id"])
    assert (folder.image_token_id, folder.video_token_id, folder.vision_start_token_id) == (
        model["image_token_id"],
        model["video_token_id"],
        model["vision_start_token_id"],
    )
    assert folder.context_length == model["context_length"] and folder.vocab_size == model["vocab_size"]
    assert folder.spatial_merge_size == model["vision"]["spatial_merge_size"]
    assert dict(folder.search) == raw["search"]
    assert [g.filename for g in (folder.vision, folder.embedding, folder.decoder)] == ["vision.onnx", "embedding.onnx", "model.onnx"]
    assert folder.provider == folder.decoder.provider == "cpu"
    assert folder.genai_config() == raw  # a private copy: changing it changes nothing
    folder.genai_config()["model"]["type"] = "changed"
    assert folder.genai_config() == raw
    with pytest.raises(TypeError):
        folder.search["max_length"] = 1  # read-only
    assert folder.manifest is not None and folder.precision == folder.manifest.precision == "fp32"
    needs = folder.requirements()
    assert needs.og_distribution == "onnxruntime-genai" and needs.og_versions == OG_VERSIONS and "video" in needs.extras


def _folder(tmp_path: Path, exported, name="f", manifest=True) -> Path:
    """A folder holding just the export's genai_config.json (and manifest.json): what ExportedFolder reads."""
    folder = tmp_path / name
    folder.mkdir()
    shutil.copyfile(exported(PRESET) / GENAI_CONFIG, folder / GENAI_CONFIG)
    if manifest:
        shutil.copyfile(exported(PRESET) / MANIFEST, folder / MANIFEST)
    return folder


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _refused(path, *needles) -> str:
    with pytest.raises(FolderError) as info:
        ExportedFolder.open(path)
    message = str(info.value)
    assert isinstance(info.value, ValueError) and "\n" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def test_not_a_folder_is_refused_with_the_fix(tmp_path):
    _refused(tmp_path / "nothing", "nothing does not exist", "builder_qwen3vl.py")
    (tmp_path / "file").write_text("x")
    _refused(tmp_path / "file", "is a file", "builder_qwen3vl.py")
    _refused(tmp_path, "holds no exported model (no genai_config.json)", "builder_qwen3vl.py")
    assert not is_exported_folder(tmp_path)


def _delete(*keys):
    def change(data):
        node = data
        for key in keys[:-1]:
            node = node[key]
        del node[keys[-1]]

    return change


def _set(value, *keys):
    def change(data):
        node = data
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value

    return change


@pytest.mark.parametrize(
    "file,change,needles",
    [
        (GENAI_CONFIG, _delete("model", "decoder", "hidden_size"), ["has no model.decoder.hidden_size", "export the folder again"]),
        (GENAI_CONFIG, _delete("model", "image_token_id"), ["has no model.image_token_id"]),
        (GENAI_CONFIG, _set("7", "model", "video_token_id"), ["model.video_token_id is '7', not int"]),
        (GENAI_CONFIG, _set(True, "model", "decoder", "num_hidden_layers"), ["model.decoder.num_hidden_layers is True, not int"]),
        (GENAI_CONFIG, _set([], "model", "eos_token_id"), ["model.eos_token_id is [], not a token id"]),
        (GENAI_CONFIG, _set("qwen2_5_vl", "model", "type"), ["declares model type 'qwen2_5_vl'", "not a Qwen3-VL export"]),
        (GENAI_CONFIG, _set("cuda", "model", "decoder", "session_options", "provider_options"), ["provider_options is 'cuda'"]),
        (MANIFEST, _set(MANIFEST_VERSION + 1, "manifest_version"), ["newer than this genai-qwen3vl reads", "pip install -U"]),
        (MANIFEST, _delete("source", "config_sha256"), ["manifest.json has no source.config_sha256"]),
        (MANIFEST, _set("int3", "precision"), ["names -p int3 -e cpu", "precision 'int3' is unknown"]),
        (MANIFEST, _set("Qwen2VLForConditionalGeneration", "architecture"), ["Qwen2VLForConditionalGeneration", "supported"]),
    ],
)
def test_a_damaged_file_is_named_with_the_key_and_the_fix(tmp_path, exported, file, change, needles):
    folder = _folder(tmp_path, exported)
    _edit(folder / file, change)
    _refused(folder, str(folder / file), *needles)


@pytest.mark.parametrize("file", [GENAI_CONFIG, MANIFEST])
def test_files_that_are_not_json_objects(tmp_path, exported, file):
    folder = _folder(tmp_path, exported)
    (folder / file).write_text('{"model": ')
    _refused(folder, f"{folder / file} is not valid JSON", "line 1", "export the folder again")
    (folder / file).write_text("[1, 2]")
    _refused(folder, f"{folder / file} holds a JSON list, not an object")
    (folder / file).write_bytes(b"\xff\xfe{}")
    _refused(folder, f"{folder / file} is not UTF-8")


def test_a_folder_without_a_manifest_opens(tmp_path, exported):
    folder = ExportedFolder.open(_folder(tmp_path, exported, manifest=False))
    assert folder.manifest is None and folder.precision is None and folder.provider == "cpu"
    assert folder.architecture is QWEN3_VL
    assert record_validation(folder.path, {"result": "passed"}) is False and not (folder.path / MANIFEST).exists()


@pytest.mark.parametrize(
    "elem_type,matmul_nbits,expected",
    [(1, False, "fp32"), (10, False, "fp16"), (16, False, "bf16"), (1, True, "int4"), (10, True, "int4"), (7, False, None)],
)
def test_the_precision_is_read_from_the_decoder_graph_without_onnx(tmp_path, exported, elem_type, matmul_nbits, expected):
    """What a folder without a manifest can tell: validate's rule (MatMulNBits: int4, else the
    inputs_embeds type), read from the protobuf directly; None for what it cannot read."""
    import onnx
    from onnx import TensorProto, helper

    path = _folder(tmp_path, exported, manifest=False)
    folder = ExportedFolder.open(path)
    assert folder.precision_from_graph() is None  # no model.onnx
    nodes = [helper.make_node("Identity", ["inputs_embeds"], ["x"], name="/model/Identity")]
    if matmul_nbits:
        nodes.append(helper.make_node("MatMulNBits", ["x", "w", "s"], ["y"], domain="com.microsoft", K=8, N=8, bits=4, block_size=32))
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, 2]),
        helper.make_tensor_value_info("inputs_embeds", elem_type, [1, 2, 8]),
    ]
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("x", elem_type, [1, 2, 8])])
    onnx.save(helper.make_model(graph), str(path / folder.decoder.filename))
    assert folder.precision_from_graph() == expected
    (path / folder.decoder.filename).write_bytes(b"\x3a\xff\xff")  # a length beyond the file
    assert folder.precision_from_graph() is None


def test_the_precision_read_from_an_exported_graph_agrees_with_validates_onnx_scan(tmp_path, exported):
    from genai_qwen3vl.verify.validate import exported_target

    path = _folder(tmp_path, exported, manifest=False)
    shutil.copyfile(exported(PRESET) / "model.onnx", path / "model.onnx")  # the graph; its weights file is not read
    assert ExportedFolder.open(path).precision_from_graph() == exported_target(path).precision == "fp32"


def test_record_validation_replaces_the_manifest_atomically(tmp_path, exported):
    path = _folder(tmp_path, exported)
    before = json.loads((path / MANIFEST).read_text())
    (path / MANIFEST).chmod(0o640)
    assert record_validation(path, {"result": "failed", "checks": 3})
    after = json.loads((path / MANIFEST).read_text())
    assert after == {**before, "validation": {"result": "failed", "checks": 3}}
    assert stat.S_IMODE((path / MANIFEST).stat().st_mode) == 0o640
    assert sorted(p.name for p in path.iterdir()) == sorted([GENAI_CONFIG, MANIFEST])  # no temporary file left
    assert dict(ExportedFolder.open(path).manifest.validation) == {"result": "failed", "checks": 3}
    _edit(path / MANIFEST, _set(MANIFEST_VERSION + 1, "manifest_version"))
    with pytest.raises(FolderError, match="newer than"):
        record_validation(path, {"result": "passed"})  # not rewritten by a reader that does not know its format


def test_a_cuda_folder_needs_the_cuda_distribution(tmp_path, exported):
    path = _folder(tmp_path, exported, manifest=False)
    _edit(path / GENAI_CONFIG, _set([{"cuda": {"use_tf32": "0"}}], "model", "decoder", "session_options", "provider_options"))
    folder = ExportedFolder.open(path)
    assert folder.provider == folder.decoder.provider == "cuda" and folder.vision.provider == "cpu"
    needs = folder.requirements()
    assert needs.og_distribution == "onnxruntime-genai-cuda" and "genai-qwen3vl[cuda]" in needs.install


def test_og_versions_are_setup_pys():
    setup = (ROOT / "setup.py").read_text()
    for distribution in OG_DISTRIBUTIONS.values():
        assert f'"{distribution}{OG_VERSIONS}"' in setup, distribution


# --------------------------------------------------------------------------- the guard
# The one module that reads genai_config.json and manifest.json; everything else opens the folder
# through it. (The export writes them through folder.GENAI_CONFIG / folder.MANIFEST.)
READER = ROOT / "genai_qwen3vl" / "model" / "folder.py"
FILES = (GENAI_CONFIG, MANIFEST)
# reading a file: json.load / json.loads / Path.read_text / read_bytes, or the builtin open
READ_METHODS = {"load", "loads", "read_text", "read_bytes"}


def _problems(path: Path, root: Path) -> list[str]:
    """Where ``path`` names one of the folder's files as a path (a string without spaces ending in
    its name: prose in help texts and docstrings has spaces), or reads a file in a function that
    uses folder.GENAI_CONFIG / folder.MANIFEST."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    where = path.relative_to(root)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.endswith(FILES) and " " not in node.value:
            found.append(f"{where}:{node.lineno} names {node.value!r}")
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            inside = list(ast.walk(node))
            names = {n.id if isinstance(n, ast.Name) else n.attr for n in inside if isinstance(n, (ast.Name, ast.Attribute))}
            reads = [
                c
                for c in inside
                if isinstance(c, ast.Call)
                and (
                    (isinstance(c.func, ast.Attribute) and c.func.attr in READ_METHODS)
                    or (isinstance(c.func, ast.Name) and c.func.id == "open")
                )
            ]
            if names & {"GENAI_CONFIG", "MANIFEST"} and reads:
                found.append(f"{where}:{node.lineno} reads a file where it names folder.GENAI_CONFIG/MANIFEST")
    return found


def _scan(root: Path) -> list[str]:
    return [p for path in sorted(root.rglob("*.py")) if path != READER for p in _problems(path, root.parent)]


def test_the_guard_finds_a_module_that_parses_genai_config(tmp_path):
    """The rule catches the forms a module would use (so the guard below can fail), not prose."""
    cases = {
        "literal.py": 'import json\ndef f(d):\n    return json.loads((d / "genai_config.json").read_text())\n',
        "fstring.py": 'def f(d):\n    return open(f"{d}/manifest.json").read()\n',
        "constant.py": "import json\nfrom x.folder import GENAI_CONFIG\ndef f(d):\n    return json.load(open(d / GENAI_CONFIG))\n",
        "prose.py": 'HELP = "default: genai_config.json"\n"""Reads genai_config.json through model/folder.py."""\n',
        "through_folder.py": "from x.folder import MANIFEST, ExportedFolder\ndef f(d):\n    return ExportedFolder.open(d), d / MANIFEST\n",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
    assert {Path(p.split(":")[0]).name for p in _scan(tmp_path)} == {"literal.py", "fstring.py", "constant.py"}


@pytest.mark.parametrize("folder", ["genai_qwen3vl", "examples"])
def test_only_model_folder_reads_the_folders_files(folder):
    problems = _scan(ROOT / folder)
    assert not problems, "open the folder with genai_qwen3vl.model.folder.ExportedFolder instead:\n" + "\n".join(problems)


def test_benchmarks_read_the_folder_through_model_folder():
    problems = _scan(ROOT / "benchmarks")
    assert not problems, "open the folder with genai_qwen3vl.model.folder.ExportedFolder instead:\n" + "\n".join(problems)
