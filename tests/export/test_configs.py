"""Config writers against golden JSON files, and against og's own builder where they overlap.

To regenerate the golden files after an intended change: UPDATE_GOLDEN=1 pytest tests/export/test_configs.py,
then review the diff.
"""

import json
import os
from pathlib import Path

import pytest

from genai_qwen3vl.export import configs
from genai_qwen3vl.export.options import ExportOptions
from genai_qwen3vl.model.spec import Qwen3VLSpec

GOLDEN = Path(__file__).parent / "golden"


def _options(**kw):
    return ExportOptions(output_dir=Path("unused"), input_dir=Path("unused"), **kw)


def _check_golden(name: str, data: dict) -> None:
    path = GOLDEN / name
    text = json.dumps(data, indent=4, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.is_file(), f"{path} is missing: run with UPDATE_GOLDEN=1 and review it"
    assert json.loads(path.read_text()) == json.loads(text), f"{name} drifted from the golden file"


@pytest.mark.parametrize("preset", ["awkward", "tied"])
def test_genai_config_golden(preset, checkpoints):
    spec = Qwen3VLSpec.from_checkpoint(checkpoints(preset))
    _check_golden(f"genai_config.{preset}.json", configs.genai_config(spec, _options()))


@pytest.mark.parametrize("preset", ["awkward", "tied"])
def test_processor_config_golden(preset, checkpoints):
    spec = Qwen3VLSpec.from_checkpoint(checkpoints(preset))
    _check_golden(f"processor_config.{preset}.json", configs.processor_config(spec))


def test_written_configs_equal_the_writers(exported, checkpoints):
    """What the command line wrote is exactly the pure functions' output."""
    out = exported("awkward")
    spec = Qwen3VLSpec.from_checkpoint(checkpoints("awkward"))
    assert json.loads((out / "genai_config.json").read_text()) == configs.genai_config(spec, _options())
    assert json.loads((out / "processor_config.json").read_text()) == configs.processor_config(spec)


def test_max_length_option_and_context_cap(checkpoints):
    spec = Qwen3VLSpec.from_checkpoint(checkpoints("awkward"))
    assert configs.genai_config(spec, _options(max_length=1234))["search"]["max_length"] == 1234
    huge = configs.genai_config(spec, _options(max_length=10**9))
    assert huge["search"]["max_length"] == huge["model"]["context_length"]


@pytest.mark.og_behaviour(version="0.18.0", what="its builder writes model type 'qwen3vl', which its runtime does not treat as a VLM")
def test_agrees_with_og_builder_on_shared_keys(checkpoints, tmp_path):
    """Our genai_config differs from og's builder (og's own builder class, not ours) only where
    it must: the model type, the (1+K)*H hidden size, the multimodal sections and the default
    max_length."""
    from genai_qwen3vl.export.og_builder import run_og_builder

    ckpt = checkpoints("tied")
    og_dir = run_og_builder(ckpt, tmp_path, "fp32", "cpu", {})
    theirs = json.loads((og_dir / "genai_config.json").read_text())
    spec = Qwen3VLSpec.from_checkpoint(ckpt)
    ours = configs.genai_config(spec, _options())
    assert theirs["model"]["type"] == "qwen3vl" and ours["model"]["type"] == "qwen3_vl"
    assert theirs["model"]["decoder"]["hidden_size"] == spec.text.hidden_size
    assert ours["model"]["decoder"]["hidden_size"] == spec.feature_width
    for key in ("head_size", "inputs", "outputs", "num_attention_heads", "num_hidden_layers", "num_key_value_heads", "filename"):
        assert ours["model"]["decoder"][key] == theirs["model"]["decoder"][key], key
    for key, value in theirs["model"].items():
        if key not in ("decoder", "type"):
            assert ours["model"][key] == value, key
    for key, value in theirs["search"].items():
        if key != "max_length":
            assert ours["search"][key] == value, key


def test_processor_config_follows_the_checkpoint(tmp_path, checkpoints):
    """Pixel limits, mean/std and sizes come from preprocessor_config.json, never defaults."""
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(checkpoints("awkward"), ckpt)
    pre = json.loads((ckpt / "preprocessor_config.json").read_text())
    pre["size"] = {"shortest_edge": 12345, "longest_edge": 654321}
    pre["image_mean"], pre["image_std"] = [0.1, 0.2, 0.3], [0.4, 0.5, 0.6]
    pre["resample"] = 2
    pre["do_normalize"] = False
    (ckpt / "preprocessor_config.json").write_text(json.dumps(pre))
    ops = {
        t["operation"]["name"]: t["operation"].get("attrs", {})
        for t in configs.processor_config(Qwen3VLSpec.from_checkpoint(ckpt))["processor"]["transforms"]
    }
    assert ops["resize"]["min_pixels"] == 12345 and ops["resize"]["max_pixels"] == 654321
    assert ops["resize"]["interpolation"] == "LINEAR"
    assert "normalize" not in ops
    pre["do_normalize"] = True
    pre.pop("size")
    pre["min_pixels"], pre["max_pixels"] = 1000, 2000  # legacy keys
    (ckpt / "preprocessor_config.json").write_text(json.dumps(pre))
    ops = {
        t["operation"]["name"]: t["operation"].get("attrs", {})
        for t in configs.processor_config(Qwen3VLSpec.from_checkpoint(ckpt))["processor"]["transforms"]
    }
    assert (ops["resize"]["min_pixels"], ops["resize"]["max_pixels"]) == (1000, 2000)
    assert ops["normalize"]["mean"] == [0.1, 0.2, 0.3] and ops["normalize"]["std"] == [0.4, 0.5, 0.6]
