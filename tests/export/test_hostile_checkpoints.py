"""The hostile-checkpoint suite: each case copies a session-built tiny checkpoint,
damages it as a broken download or an attacker would, and runs the exporter's command line in a
fresh process under an address-space limit. Every case must end with exit 2, one error line
naming the problem (no traceback), nothing at the output path, and little memory: the refusal
comes from the config and the safetensors headers, before anything is sized from the config.

The counts (tried / clean exit 2 / other) are printed at the end of the module."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ..helpers import ROOT, assert_clean_failure

# the limits each run is held to: address space (a config that sizes gigabytes fails on it),
# CPU time, and the peak resident memory a refusal may take
ADDRESS_SPACE = 2 << 30
CPU_SECONDS = 120
MAX_RSS_MB = 400

TALLY = {"tried": 0, "clean": 0, "other": 0}


@pytest.fixture(scope="module", autouse=True)
def _tally(request):
    """Prints the counts after the module's last case (outside pytest's output capture)."""
    yield
    if TALLY["tried"]:
        line = f"hostile checkpoints: {TALLY['tried']} tried, {TALLY['clean']} clean exit 2, {TALLY['other']} other"
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled():
            print(f"\n{line}")


# Runs the command under the limits and prints its peak RSS (KB). A process started straight from
# pytest would report pytest's own RSS as its peak (Linux keeps ru_maxrss across fork and exec), so
# a small interpreter starts the command and reads its child's figure.
_LAUNCHER = """
import resource, subprocess, sys
limit_as, limit_cpu = int(sys.argv[1]), int(sys.argv[2])
def limits():
    resource.setrlimit(resource.RLIMIT_AS, (limit_as, limit_as))
    resource.setrlimit(resource.RLIMIT_CPU, (limit_cpu, limit_cpu))
rc = subprocess.run(sys.argv[3:], preexec_fn=limits, stdout=subprocess.DEVNULL).returncode
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(rc if rc >= 0 else 128 - rc)
"""


def run_limited(ckpt: Path, out: Path) -> tuple[subprocess.CompletedProcess, float]:
    """``builder_qwen3vl.py -i ckpt -o out`` in a fresh, limited process: (the result, its peak RSS in MB)."""
    command = [sys.executable, str(ROOT / "builder_qwen3vl.py"), "-i", str(ckpt), "-o", str(out)]
    proc = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, str(ADDRESS_SPACE), str(CPU_SECONDS), *command],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=4 * CPU_SECONDS,
    )
    return proc, int(proc.stdout.split()[-1]) / 1024


# ---------------------------------------------------------------- ways to damage a checkpoint
def _config(edit):
    def damage(ckpt: Path, outside: Path) -> None:
        cfg = json.loads((ckpt / "config.json").read_text())
        edit(cfg)
        (ckpt / "config.json").write_text(json.dumps(cfg))

    return damage


def _text(**values):
    return _config(lambda c: c["text_config"].update(values))


def _vision(**values):
    return _config(lambda c: c["vision_config"].update(values))


def _tensors(edit):
    """Rewrite a single-file checkpoint's tensors (``edit(dict of numpy arrays)``)."""

    def damage(ckpt: Path, outside: Path) -> None:
        from safetensors.numpy import load_file, save_file

        tensors = load_file(str(ckpt / "model.safetensors"))
        edit(tensors)
        save_file(tensors, str(ckpt / "model.safetensors"), metadata={"format": "pt"})

    return damage


def _drop(name):
    return _tensors(lambda t: t.pop(name))


def _set(name, value):
    return _tensors(lambda t: t.update({name: value}))


def _file(name, content: bytes):
    def damage(ckpt: Path, outside: Path) -> None:
        (ckpt / name).write_bytes(content)

    return damage


def _link_outside(name, content: bytes | None = None):
    """``name`` becomes a symlink to a file outside the checkpoint (a copy of the checkpoint's own
    file, or ``content``): refused whatever it holds."""

    def damage(ckpt: Path, outside: Path) -> None:
        target = outside / f"secret-{name}"
        target.write_bytes(content if content is not None else (ckpt / name).read_bytes())
        (ckpt / name).unlink(missing_ok=True)
        (ckpt / name).symlink_to(target)

    return damage


def _index(edit):
    def damage(ckpt: Path, outside: Path) -> None:
        index = json.loads((ckpt / "model.safetensors.index.json").read_text())
        edit(index["weight_map"], ckpt, outside)
        (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))

    return damage


def _shard_outside(weight_map, ckpt, outside):
    first = sorted(set(weight_map.values()))[0]
    shutil.copy(ckpt / first, outside / "x.safetensors")  # a real shard: only the path is wrong
    for name, fname in weight_map.items():
        if fname == first:
            weight_map[name] = "../x.safetensors"


def _remap(value):
    def edit(weight_map, ckpt, outside):
        name = sorted(weight_map)[0]
        weight_map[name] = value

    return edit


def _wrong_shard(weight_map, ckpt, outside):
    files = sorted(set(weight_map.values()))
    name = next(n for n, f in sorted(weight_map.items()) if f == files[0])
    weight_map[name] = files[1]


def _truncate_header(ckpt: Path, outside: Path) -> None:
    path = ckpt / "model.safetensors"
    path.write_bytes(path.read_bytes()[:200])


def _huge_header_length(ckpt: Path, outside: Path) -> None:
    path = ckpt / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes((1 << 62).to_bytes(8, "little") + data[8:])


def _rope(**values):
    return _config(lambda c: (c["text_config"].get("rope_parameters") or c["text_config"]["rope_scaling"]).update(values))


LAYER = "model.language_model.layers.{}."
# (case id, preset, damage, words the error line must hold)
CASES = [
    # item 14: the weights do not hold what the config asks for
    (
        "missing_decoder_tensor",
        "awkward",
        _drop(LAYER.format(2) + "mlp.down_proj.weight"),
        ("lacks 1 tensor", LAYER.format(2) + "mlp.down_proj.weight", "re-download"),
    ),
    (
        "missing_expert_tensor",
        "moe",
        _drop(LAYER.format(1) + "mlp.experts.down_proj"),
        ("lacks 1 tensor", LAYER.format(1) + "mlp.experts.down_proj"),
    ),
    ("missing_router", "moe", _drop(LAYER.format(3) + "mlp.gate.weight"), ("lacks", LAYER.format(3) + "mlp.gate.weight")),
    ("missing_dense_mlp_of_moe", "moe", _drop(LAYER.format(2) + "mlp.up_proj.weight"), ("lacks", LAYER.format(2) + "mlp.up_proj")),
    ("missing_lm_head_untied", "awkward", _drop("lm_head.weight"), ("lacks 1 tensor", "lm_head.weight")),
    ("missing_embedding", "awkward", _drop("model.language_model.embed_tokens.weight"), ("lacks", "embed_tokens.weight")),
    ("missing_final_norm", "awkward", _drop("model.language_model.norm.weight"), ("lacks", "model.language_model.norm.weight")),
    ("missing_vision_tensor", "awkward", _drop("model.visual.merger.linear_fc2.bias"), ("lacks", "model.visual.merger.linear_fc2.bias")),
    (
        "wrong_shape",
        "awkward",
        _set(LAYER.format(1) + "self_attn.k_proj.weight", np.zeros((33, 40), np.float32)),
        ("k_proj.weight has shape [33, 40]", "[32, 40]"),
    ),
    (
        "wrong_expert_shape",
        "moe",
        _set(LAYER.format(0) + "mlp.experts.gate_up_proj", np.zeros((8, 80, 47), np.float32)),
        ("gate_up_proj has shape [8, 80, 47]", "[8, 80, 48]"),
    ),
    (
        "integer_weights",
        "awkward",
        _set(LAYER.format(0) + "self_attn.q_proj.weight", np.zeros((96, 40), np.int8)),
        ("q_proj.weight is stored as I8", "unquantized"),
    ),
    ("more_layers_in_config", "awkward", _text(num_hidden_layers=6), ("lacks 22 tensors", LAYER.format(4))),
    ("fewer_layers_in_config", "awkward", _text(num_hidden_layers=3), ("does not ask for", LAYER.format(3))),
    ("fewer_vision_blocks_in_config", "awkward", _vision(depth=3), ("does not ask for", "model.visual.blocks.3.")),
    # item 15: sizes that would exhaust memory
    ("num_hidden_layers_1e9", "awkward", _text(num_hidden_layers=10**9), ("num_hidden_layers=1000000000", "at most 1024")),
    ("vision_depth_1e6", "awkward", _vision(depth=10**6), ("depth=1000000", "at most 1024")),
    ("vocab_2e9", "awkward", _text(vocab_size=2 * 10**9), ("vocab_size=2000000000",)),
    ("experts_1e6", "moe", _text(num_experts=10**6), ("num_experts=1000000",)),
    # item 23: malformed configs
    ("hidden_size_negative", "awkward", _text(hidden_size=-40), ("hidden_size=-40", "at least 1")),
    ("hidden_size_huge", "awkward", _text(hidden_size=10**12), ("hidden_size=1000000000000",)),
    ("hidden_size_string", "awkward", _text(hidden_size="40"), ("hidden_size must be a whole number", "'40' (a string)")),
    ("hidden_size_list", "awkward", _text(hidden_size=[40]), ("hidden_size must be a whole number", "(a list)")),
    ("hidden_size_float", "awkward", _text(hidden_size=40.5), ("hidden_size must be a whole number",)),
    ("mrope_section_string", "awkward", _rope(mrope_section="332"), ("mrope_section must be a list",)),
    ("image_token_id_string", "awkward", _config(lambda c: c.update(image_token_id="x")), ("image_token_id", "token id")),
    ("text_config_string", "awkward", _config(lambda c: c.update(text_config="big")), ("text_config must be a JSON object",)),
    ("config_list", "awkward", _file("config.json", b"[1, 2, 3]"), ("config.json must hold a JSON object", "(a list)")),
    ("config_not_json", "awkward", _file("config.json", b"{not json"), ("config.json is not valid JSON",)),
    ("config_deeply_nested", "awkward", _file("config.json", b"[" * 100000 + b"]" * 100000), ("config.json is not valid JSON",)),
    ("generation_config_list", "awkward", _file("generation_config.json", b"[1]"), ("generation_config.json must hold a JSON object",)),
    # item 18: paths that lead outside the checkpoint
    (
        "chat_template_symlink_outside",
        "awkward",
        _link_outside("chat_template.jinja", b"{{ 'secret' }}"),
        ("chat_template.jinja leads outside the checkpoint folder",),
    ),
    ("merges_symlink_outside", "awkward", _link_outside("merges.txt", b"#version: 0.2\nse cret\n"), ("merges.txt leads outside",)),
    ("tokenizer_symlink_outside", "awkward", _link_outside("tokenizer.json"), ("tokenizer.json leads outside",)),
    ("config_symlink_outside", "awkward", _link_outside("config.json"), ("config.json leads outside",)),
    ("weights_symlink_outside", "awkward", _link_outside("model.safetensors"), ("model.safetensors leads outside",)),
    ("index_entry_dotdot", "tied", _index(_shard_outside), ("x.safetensors leads outside",)),
    ("index_entry_deep_dotdot", "tied", _index(_remap("../../../x.safetensors")), ("x.safetensors leads outside",)),
    ("index_entry_absolute", "tied", _index(_remap("/etc/passwd")), ("/etc/passwd leads outside",)),
    ("index_entry_not_a_name", "tied", _index(_remap(7)), ("weight_map must map tensor names to file names",)),
    # broken downloads
    (
        "index_names_missing_file",
        "tied",
        _index(_remap("model-00009-of-00009.safetensors")),
        ("model-00009-of-00009.safetensors is listed in model.safetensors.index.json but missing",),
    ),
    ("index_puts_tensor_in_wrong_shard", "tied", _index(_wrong_shard), ("which does not hold it",)),
    ("index_not_json", "tied", _file("model.safetensors.index.json", b"{"), ("not a valid safetensors index",)),
    ("truncated_header", "awkward", _truncate_header, ("model.safetensors is truncated",)),
    ("header_length_huge", "awkward", _huge_header_length, ("truncated or not a safetensors file",)),
]


@pytest.mark.parametrize("preset,damage,needles", [pytest.param(*case[1:], id=case[0]) for case in CASES])
def test_hostile_checkpoint_is_refused_cleanly(tmp_path, checkpoints, preset, damage, needles):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(checkpoints(preset), ckpt)
    outside = tmp_path / "outside"
    outside.mkdir()
    damage(ckpt, outside)
    out = tmp_path / "out"
    proc, rss_mb = run_limited(ckpt, out)
    TALLY["tried"] += 1
    clean = proc.returncode == 2 and "Traceback" not in proc.stderr and rss_mb < MAX_RSS_MB
    TALLY["clean" if clean else "other"] += 1
    assert_clean_failure(proc, out, *needles)
    assert rss_mb < MAX_RSS_MB, f"peak RSS {rss_mb:.0f} MB refusing the checkpoint"
    assert "[2/6]" not in proc.stderr, "refused only after the export had started"


def test_expected_tensors_are_transformers_parameters(checkpoints):
    """The names and shapes the header check asks for are exactly transformers' own model's
    parameters, dense and MoE, tied and untied, Qwen3-VL and Qwen3.5 (built on the meta device)."""
    import torch
    import transformers

    from genai_qwen3vl.export.weights import expected_tensors
    from genai_qwen3vl.model.spec import Qwen3VLSpec

    for preset in ("awkward", "tied", "moe", "moe_hub", "q35", "q35_tied", "q35_moe"):
        spec = Qwen3VLSpec.from_checkpoint(checkpoints(preset))
        config = getattr(transformers, spec.architecture.config_class).from_pretrained(checkpoints(preset))
        with torch.device("meta"):
            model = spec.architecture.transformers_class(spec.architecture.hf_class)(config)
        params = {name: tuple(p.shape) for name, p in model.state_dict().items() if name != "lm_head.weight"}
        expected = dict(expected_tensors(spec, "model.language_model.", "model.visual."))
        assert set(expected) == set(params), preset
        assert all(params[name] in shapes for name, shapes in expected.items()), preset
