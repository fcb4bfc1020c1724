"""The contract of export/og_compat.py with the installed onnxruntime-genai and onnxruntime: fresh
decoder graphs built by og's own builder (and by our builder class for the experts) carry every
anchor og_compat names, og's builder classes have the hooks our classes use, onnxruntime's
private quantizer is there, and a release outside the supported ones is refused in one line."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from genai_qwen3vl import onnx_format as fmt
from genai_qwen3vl.errors import UpstreamVersionError
from genai_qwen3vl.export import og_compat
from genai_qwen3vl.export.og_builder import builder_class, og_builder_options, run_og_builder, text_only_view
from genai_qwen3vl.export.options import ExportOptions
from genai_qwen3vl.model.architectures import QWEN3_VL, QWEN3_VL_MOE
from genai_qwen3vl.model.spec import Qwen3VLSpec


def test_the_installed_versions_are_the_supported_ones():
    og_compat.check_versions()


@pytest.mark.parametrize("package,version", [("onnxruntime-genai", "0.19.0"), ("onnxruntime-genai", "0.17.2"), ("onnxruntime", "1.33.0")])
def test_another_release_is_refused_in_one_line_naming_both_versions(package, version):
    problem = og_compat.version_problem(package, version)
    assert problem is not None and "\n" not in problem
    assert f"{package} {version} is installed" in problem
    assert "supports " + " or ".join(f"{a}.{b}.x" for a, b in og_compat.SUPPORTED[package][1]) in problem
    assert og_compat.version_problem(package, ".".join(map(str, og_compat.SUPPORTED[package][1][-1])) + ".7") is None


def test_a_wrong_og_release_stops_the_export_with_that_line(monkeypatch):
    import onnxruntime_genai

    monkeypatch.setattr(onnxruntime_genai, "__version__", "0.19.1")
    with pytest.raises(UpstreamVersionError, match=r"^onnxruntime-genai 0\.19\.1 is installed; .* supports 0\.18\.x: install"):
        og_compat.builder_module()


@pytest.mark.parametrize("arch", [QWEN3_VL, QWEN3_VL_MOE], ids=lambda a: a.hf_class)
def test_ogs_builder_class_has_every_hook_we_use(arch):
    base = og_compat.builder_base(arch)
    hooks = og_compat.BUILDER_HOOKS + (og_compat.MOE_HOOKS if arch.experts is not None else ())
    assert all(callable(getattr(base, name, None)) for name in hooks)
    assert issubclass(builder_class(arch), base)


def test_a_builder_class_without_a_hook_is_named(monkeypatch):
    base = og_compat.builder_base(QWEN3_VL)
    monkeypatch.setattr(base, "make_mlp", None, raising=False)
    with pytest.raises(UpstreamVersionError, match="onnxruntime-genai's Qwen3VLTextModel has no make_mlp"):
        og_compat.builder_base(QWEN3_VL)


def test_the_dispatch_swap_is_undone():
    module = og_compat.builder_module()
    original = getattr(module, QWEN3_VL.og_builder_class)
    with og_compat.dispatching_to(QWEN3_VL, builder_class(QWEN3_VL)):
        assert getattr(module, QWEN3_VL.og_builder_class) is builder_class(QWEN3_VL)
    assert getattr(module, QWEN3_VL.og_builder_class) is original


@pytest.mark.parametrize("precision", ["fp32", "int4"])
def test_a_fresh_og_decoder_has_every_anchor(precision, checkpoints, tmp_path):
    """og's own builder class, as og writes it (int4: og's own MatMulNBits, LM head included)."""
    checkpoint = checkpoints("awkward")
    view = text_only_view(checkpoint, tmp_path / "view")
    extra = {"accuracy_level": "1"} if precision == "int4" else {}
    model = onnx.load(str(run_og_builder(view, tmp_path, precision, "cpu", extra) / "model.onnx"), load_external_data=False)
    layers = Qwen3VLSpec.from_checkpoint(checkpoint).text.num_hidden_layers
    assert og_compat.decoder_anchor_problems(model, layers) == []
    if precision == "int4":
        assert any(n.op_type == fmt.MATMUL_NBITS and n.domain == fmt.MS_DOMAIN for n in model.graph.node)
    # the check can fail: a graph whose anchors moved is reported
    for node in model.graph.node:
        if node.op_type == og_compat.SKIP_NORM:
            node.input[0] = node.input[0].replace("post_attention_layernorm", "moved")
        node.name = node.name.replace("/lm_head/", "/head/")
    problems = og_compat.decoder_anchor_problems(model, layers)
    assert len(problems) == layers + 1 and problems[-1] == f"no {og_compat.LM_HEAD_MATMUL} node"


def test_our_expert_builder_writes_ogs_moe_nodes_with_the_attributes_it_sets(checkpoints, tmp_path):
    """Our MoE builder class through og's create_model (og told the architecture it dispatches on):
    the graph has og's anchors, the router and QMoE nodes under the names og_compat gives, and the
    attributes our class sets through og's attribute dictionaries."""
    checkpoint = checkpoints("moe")
    spec = Qwen3VLSpec.from_checkpoint(checkpoint)
    options = ExportOptions(input_dir=checkpoint, output_dir=tmp_path / "out", precision="int4", execution_provider="cpu")
    view = text_only_view(checkpoint, tmp_path / "view")
    extra = og_builder_options(options, experts=True)
    model = onnx.load(str(run_og_builder(view, tmp_path, "fp32", "cpu", extra, QWEN3_VL_MOE) / "model.onnx"), load_external_data=False)
    assert og_compat.decoder_anchor_problems(model, spec.text.num_hidden_layers) == []
    nodes = {n.name: n for n in model.graph.node}
    expert_layers = [i for i in range(spec.text.num_hidden_layers) if spec.text.experts.is_expert_layer(i)]
    assert expert_layers
    for i in expert_layers:
        assert nodes[og_compat.moe_node(i, "router/MatMul")].op_type == "MatMul"
        assert nodes[og_compat.moe_node(i, "router/Reshape")].input[1] == og_compat.int64_constant_name([-1, spec.text.experts.num_experts])
        qmoe = nodes[og_compat.moe_node(i, fmt.QMOE)]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in qmoe.attribute}
        assert set(og_compat.MOE_NODE_ATTRS) <= set(attrs)
        assert attrs["swiglu_fusion"] == 1 and attrs["normalize_routing_weights"] == 1 and attrs["activation_type"] == b"swiglu"
        assert attrs["block_size"] == options.int4_block_size
        assert qmoe.input[1] == og_compat.moe_node(i, "router/Reshape/output_0")


def test_onnxruntimes_private_quantizer_packs_what_the_codec_reads():
    """quantize_matmul_4bits (og's int4 kernel) writes symmetric 4-bit blocks that
    onnx_format.dequantize_blocks decodes to within a step of the weights (odd K padded)."""
    n, k, block = 5, 70, 32
    w = np.random.default_rng(0).normal(0, 1, (n, k)).astype(np.float32)
    blocks = -(-k // block)
    packed = np.zeros((n, blocks, block // 2), dtype=np.uint8)
    scales = np.zeros((n, blocks), dtype=np.float32)
    unused = np.zeros((n, (blocks + 1) // 2), dtype=np.uint8)
    padded = np.pad(np.ascontiguousarray(w.T), ((0, blocks * block - k), (0, 0)))
    og_compat.quantize_matmul_4bits()(packed, padded, scales, unused, block, n, k, True)
    back = fmt.dequantize_blocks(packed, scales, block, k)
    assert np.all(np.abs(back - w) <= np.repeat(np.abs(scales), block, axis=-1)[:, :k] * (1 + 1e-5))


def test_a_wrong_onnxruntime_release_is_refused_before_its_quantizer_is_touched(monkeypatch):
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "__version__", "1.40.0")
    with pytest.raises(UpstreamVersionError, match=r"^onnxruntime 1\.40\.0 is installed; .* supports 1\.31\.x or 1\.32\.x: install"):
        og_compat.quantize_matmul_4bits()
