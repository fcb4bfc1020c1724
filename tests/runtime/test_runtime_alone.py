"""The runtime tier stands alone: running an exported folder imports no torch, no transformers,
no onnx exporter, and needs only what ``pip install genai-qwen3vl`` (no extras) installs."""

import ast
import importlib.metadata
import subprocess
import sys
from pathlib import Path

from genai_qwen3vl.testing.media import make_frames, write_video

from ..helpers import ROOT

# what only the export and verify tiers may import
EXPORT_ONLY = ("torch", "torchvision", "transformers", "onnx", "onnxscript", "onnx_ir", "safetensors", "huggingface_hub")
# the modules that make up the runtime and what it stands on
RUNTIME_FILES = [
    "genai_qwen3vl/__init__.py",
    "genai_qwen3vl/__main__.py",
    "genai_qwen3vl/cli.py",
    "genai_qwen3vl/errors.py",
    "genai_qwen3vl/logs.py",
    *sorted(str(p.relative_to(ROOT)) for d in ("runtime", "model") for p in (ROOT / "genai_qwen3vl" / d).glob("*.py")),
]

_SCRIPT = r"""
import importlib, importlib.abc, pkgutil, sys

BLOCKED = set(sys.argv[1].split(","))

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"the runtime imported {name}")
        return None

sys.meta_path.insert(0, Blocker())
folder, video, image = sys.argv[2], sys.argv[3], sys.argv[4]
if video == "frames":  # a frame array: no PyAV needed
    import numpy as np

    video = np.stack([np.full((64, 96, 3), 30 * i, np.uint8) for i in range(6)])

import genai_qwen3vl, genai_qwen3vl.cli, genai_qwen3vl.runtime, genai_qwen3vl.model
for package in (genai_qwen3vl.runtime, genai_qwen3vl.model):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if not info.name.startswith("genai_qwen3vl.runtime.serve"):  # the server needs the serve extra
            importlib.import_module(info.name)

import onnxruntime_genai as og
from genai_qwen3vl import Qwen3VLProcessor

model = og.Model(folder)
processor = Qwen3VLProcessor(folder)
messages = [{"role": "user", "content": [{"type": "image"}, {"type": "video"}, {"type": "text", "text": "What happens?"}]}]
inputs = processor(processor.apply_chat_template(messages), images=[image], videos=[video], video_fps=4.0)
params = og.GeneratorParams(model)
params.set_search_options(do_sample=False, max_length=int(inputs["input_ids"].shape()[-1]) + 5)
generator = og.Generator(model, params)
generator.set_inputs(inputs)
tokens = []
while not generator.is_done():
    generator.generate_next_token()
    tokens.append(int(generator.get_next_tokens()[0]))
assert len(tokens) == 5, tokens

rc = genai_qwen3vl.cli.main(["chat", "-m", folder, "--image", image, "-p", "Hi", "--greedy", "--max_length", "200"])
assert rc == 0, rc
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
assert not loaded, loaded
print("RUNTIME-ALONE-OK")
"""


def test_running_an_exported_folder_never_imports_torch(exported, image_file, tmp_path):
    video = write_video(tmp_path / "clip.mp4", make_frames(6, 64, 96), fps=4)
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT, ",".join(EXPORT_ONLY), str(exported("awkward")), str(video), str(image_file(96, 128, 1))],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "RUNTIME-ALONE-OK" in proc.stdout


def _third_party_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("genai_qwen3vl", "__future__")}


def _setup_list(name: str) -> list[str]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    node = next(n for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == name)
    return [ast.literal_eval(e) for e in node.value.elts]


def _distribution(requirement: str) -> str:
    return requirement.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip().lower().replace("_", "-")


def _undeclared_imports(files: list[str], *lists: str) -> list[str]:
    """Third-party imports of ``files`` that no distribution in setup.py's ``lists`` provides."""
    declared = {_distribution(r) for name in lists for r in _setup_list(name)}
    providers = importlib.metadata.packages_distributions()
    problems = []
    for file in files:
        for module in _third_party_imports(ROOT / file):
            dists = {d.lower().replace("_", "-") for d in providers.get(module, [module])}
            if not dists & declared:
                problems.append(f"{file} imports {module} ({', '.join(sorted(dists))}), which {' + '.join(lists)} do not bring")
    return problems


def test_the_runtime_imports_only_what_a_plain_install_brings():
    """Every third-party import of the runtime (and of the modules it stands on) belongs to a
    distribution in setup.py's RUNTIME list (or VIDEO, the optional PyAV)."""
    plain = [f for f in RUNTIME_FILES if not f.endswith("ray_cluster.py")]
    assert not (problems := _undeclared_imports(plain, "RUNTIME", "VIDEO")), problems
    assert len(RUNTIME_FILES) > 10 and len(plain) == len(RUNTIME_FILES) - 1  # the glob found the real modules
    # ray_cluster.py (batch --ray, serve --ray-replicas): the ray extra, imported only when asked for
    assert not (problems := _undeclared_imports(RUNTIME_FILES, "RUNTIME", "VIDEO", "RAY")), problems
    tree = ast.parse((ROOT / "genai_qwen3vl/runtime/ray_cluster.py").read_text())
    top = [ast.unparse(n).split()[1] for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert top and not [m for m in top if m == "ray" or m.startswith("ray.")], top


SERVE_FILES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "genai_qwen3vl" / "runtime" / "serve").glob("*.py"))


def test_the_server_imports_only_the_runtime_and_the_serve_extra():
    """... and its Ray Serve deployment (ray_serve.py, --ray-replicas) the ray extra besides."""
    local = [f for f in SERVE_FILES if not f.endswith("ray_serve.py")]
    assert not (problems := _undeclared_imports(local, "RUNTIME", "VIDEO", "SERVE")), problems
    assert not (problems := _undeclared_imports(SERVE_FILES, "RUNTIME", "VIDEO", "SERVE", "RAY")), problems
    assert len(local) >= 7 and len(SERVE_FILES) == len(local) + 1


BATCH_FILES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "genai_qwen3vl" / "runtime" / "batch").glob("*.py"))


def test_the_batch_command_imports_only_the_runtime_and_the_batch_extra():
    """... and --ray (ray_pool.py) the ray extra besides."""
    local = [f for f in BATCH_FILES if not f.endswith("ray_pool.py")]
    assert not (problems := _undeclared_imports(local, "RUNTIME", "VIDEO", "BATCH")), problems
    assert not (problems := _undeclared_imports(BATCH_FILES, "RUNTIME", "VIDEO", "BATCH", "RAY")), problems
    assert len(local) >= 5 and len(BATCH_FILES) == len(local) + 1


_SERVE_SCRIPT = (
    _SCRIPT.split('if video == "frames"')[0]
    + r"""
import threading
from pathlib import Path
from genai_qwen3vl.runtime.serve.app import create_app, ServeOptions
from genai_qwen3vl.runtime.serve.engine import Engine
from genai_qwen3vl.runtime.serve.media import MediaPolicy
from genai_qwen3vl.runtime.serve.protocol import parse_chat_request
create_app(ServeOptions(model_dir=Path(sys.argv[2])))
engine = Engine(Path(sys.argv[2]), None, None, None)  # starts the og worker process (the blocker is not in it)
request = parse_chat_request({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "min_tokens": 2})
prepared = engine.prepare(request, engine.check(request, 1, 1), MediaPolicy(None, 10**8))
messages, done = [], threading.Event()
engine.worker.start(prepared.arrays, prepared.search, lambda kind, payload: (messages.append(kind), kind == "done" and done.set()))
assert done.wait(60) and messages == ["token", "token", "done"], messages
engine.worker.close()
assert "torch" not in sys.modules
print("SERVE-ALONE-OK")
"""
)


def test_the_server_runs_without_torch(exported):
    proc = subprocess.run(
        [sys.executable, "-c", _SERVE_SCRIPT, ",".join(EXPORT_ONLY), str(exported("awkward")), "frames", "-"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SERVE-ALONE-OK" in proc.stdout


def test_a_plain_install_in_a_fresh_venv_runs_an_exported_folder(exported, image_file, tmp_path):
    """`pip install genai-qwen3vl` (this tree, no extras) into a new virtual environment: og,
    Qwen3VLProcessor and the chat command run an exported folder there, where torch is absent."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(ROOT)], capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stdout + install.stderr
    absent = subprocess.run([str(python), "-c", "import torch"], capture_output=True, text=True)
    assert absent.returncode != 0 and "No module named 'torch'" in absent.stderr
    proc = subprocess.run(
        [str(python), "-c", _SCRIPT, ",".join(EXPORT_ONLY), str(exported("awkward")), "frames", str(image_file(96, 128, 1))],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "RUNTIME-ALONE-OK" in proc.stdout
    # what needs an extra says which, in one line
    for command, line in (
        (["export", "-i", tmp_path, "-o", tmp_path / "out"], "exporting a checkpoint needs the export extra"),
        (["demo", "--workdir", tmp_path / "demo"], "the demo needs the verify extra"),
    ):
        proc = subprocess.run(
            [str(python), "-m", "genai_qwen3vl", *map(str, command)], capture_output=True, text=True, timeout=120, cwd=tmp_path
        )
        assert proc.returncode == 2 and proc.stderr.startswith(f"error: {line} (torch is not installed)"), proc.stderr
        assert proc.stderr.count("\n") == 1, proc.stderr


# runs a command (argv[2:]: a script path or a module name) with the modules named in argv[1]
# absent, as in an installation without the extra that brings them
_ABSENT = r"""
import importlib.abc, runpy, sys

ABSENT = set(sys.argv[1].split(","))

class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ABSENT:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Absent())
sys.argv = sys.argv[2:]
if sys.argv[0].endswith(".py"):
    runpy.run_path(sys.argv[0], run_name="__main__")
else:
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def _without(absent: str, *command) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _ABSENT, absent, *map(str, command)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def test_a_missing_extra_is_one_line_naming_it(checkpoints, tmp_path):
    """Without the export extra, the export commands and the demo say which extra to install, in
    one line, exit 2, and write nothing; the runtime's chat help still works."""
    out = tmp_path / "out"
    cases = [
        ("onnx", [ROOT / "builder_qwen3vl.py", "-i", checkpoints("awkward"), "-o", out], "exporting a checkpoint", "export", "onnx"),
        (
            "transformers",
            ["genai_qwen3vl", "export", "-i", checkpoints("awkward"), "-o", out],
            "exporting a checkpoint",
            "export",
            "transformers",
        ),
        ("torch,transformers,onnx", ["genai_qwen3vl", "demo", "--workdir", tmp_path / "demo"], "the demo", "verify", "torch"),
        ("torchvision", ["genai_qwen3vl", "demo", "--workdir", tmp_path / "demo"], "the demo", "verify", "torchvision"),
        (
            "torchvision",
            [ROOT / "builder_qwen3vl.py", "-i", checkpoints("awkward"), "-o", out, "--validate"],
            "--validate",
            "verify",
            "torchvision",
        ),
    ]
    for absent, command, what, extra, module in cases:
        proc = _without(absent, *command)
        assert proc.returncode == 2, (command, proc.stdout + proc.stderr)
        expected = f'error: {what} needs the {extra} extra ({module} is not installed): pip install "genai-qwen3vl[{extra}]"\n'
        assert proc.stderr == expected, (command, proc.stderr)
        assert not out.exists() and not (tmp_path / "demo").exists()
    proc = _without(",".join(EXPORT_ONLY), "genai_qwen3vl", "chat", "--help")
    assert proc.returncode == 0 and proc.stdout.startswith("usage: "), proc.stderr


def test_the_extras_modules_are_setup_pys():
    """genai_qwen3vl.cli.EXTRA_MODULES (what the missing-extra message checks) lists modules of the
    distributions in setup.py's EXPORT and VERIFY lists, and a module of each of them."""
    from genai_qwen3vl.cli import EXTRA_MODULES

    tree = ast.parse((ROOT / "setup.py").read_text())
    verify = next(n.value for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "VERIFY")
    assert isinstance(verify, ast.BinOp) and verify.left.id == "EXPORT"  # VERIFY = EXPORT + [...]
    extras = {"export": _setup_list("EXPORT"), "verify": _setup_list("EXPORT") + [ast.literal_eval(e) for e in verify.right.elts]}
    providers = importlib.metadata.packages_distributions()
    for extra, requirements in extras.items():
        declared = {_distribution(r) for r in requirements}
        brought = {d.lower().replace("_", "-") for module in EXTRA_MODULES[extra] for d in providers.get(module, [module])}
        assert brought == declared, (extra, sorted(brought ^ declared))
