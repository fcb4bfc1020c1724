"""The one home of what the export takes from onnxruntime-genai's (og's) and onnxruntime's
private surface, and the versions it was written against.

The runtime uses og's public API only (``og.Model``, ``og.Generator``, ...). The export goes
further, and everything of that is named here:

* og's model builder (``onnxruntime_genai.models.builder``): ``parse_extra_options`` and
  ``create_model``, its builder classes (``Architecture.og_builder_module`` /
  ``og_builder_class``), which ``og_builder.py`` subclasses and swaps into the builder module's
  namespace for the duration of a build (``dispatching_to``), and ``parsed["hf_details"]
  ["hf_config"]``, where the architecture og dispatches on is set (``dispatch_as``);
* the builder methods and attribute dictionaries our subclasses override or read
  (``BUILDER_HOOKS``, ``MOE_HOOKS``, ``MOE_ATTRS``): ``moe.py`` writes Qwen3-VL-MoE's expert
  layers through them;
* the node and value names of og's decoder graph that the graph surgery anchors on: the
  residual stream after each layer, read by the next ``SkipSimplifiedLayerNormalization``
  (DeepStack, ``deepstack.py``), and the LM head's MatMul (the logits trim, ``trim_logits.py``);
  and the names og gives the expert layers' nodes (``moe_node``);
* onnxruntime's ``quantize_matmul_4bits`` from its pybind module (``quantize.py``: og's own
  int4 kernel, so the streaming quantizer's output is byte for byte og's).

Each accessor checks the installed versions first (``check_versions``) and refuses, in one line
naming the installed and the supported versions, a release it was not written for.
``tests/export/test_og_compat.py`` builds fresh og graphs with og's builder and finds every
anchor named here: when upstream moves, this file and that test break, not five others quietly.

The one other upstream-private seam of the project is ``runtime/serve/deadlines.py`` (uvicorn's
``H11Protocol`` signal capture); it asserts uvicorn's version itself.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from typing import Iterator

from ..errors import UpstreamVersionError
from ..model.architectures import Architecture
from ..model.precisions import LM_HEAD

OG_BUILDER = "onnxruntime_genai.models.builder"
ORT_PYBIND = "onnxruntime.capi._pybind_state"

# (package, import name, supported release series as (major, minor) pairs): what this file was
# written and tested against (setup.py pins og to 0.18.x; the cuda extra allows onnxruntime-gpu 1.31)
SUPPORTED = {
    "onnxruntime-genai": ("onnxruntime_genai", ((0, 18),)),
    "onnxruntime": ("onnxruntime", ((1, 31), (1, 32))),
}

# builder methods our decoder classes override or call (og_builder.builder_class, moe.py)
BUILDER_HOOKS = ("is_packed_attn_supported", "make_mlp", "make_matmul", "make_reshape", "make_initializer")
MOE_HOOKS = (
    "load_weights",
    "get_moe_module",
    "make_moe",
    "make_moe_preprocessing",
    "make_moe_router",
    "make_moe_subgraph",
    "make_moe_expert_names",
    "make_moe_op",
    "make_moe_router_shape",
    "make_qmoe_weights",
    "exclude_node_from_quantization",
)
# the keys of og's builder attribute dictionaries that moe.py reads or sets
MOE_ATTRS = {
    "moe_attrs": ("op_type", "num_experts", "block_size", "activation_type", "swiglu_fusion", "normalize_routing_weights"),
    "quant_attrs": ("qmoe_block_size",),
    "layernorm_attrs": ("skip_input",),
}
# the attributes og writes on its MoE / QMoE nodes from ``moe_attrs`` (what the contract test reads back)
MOE_NODE_ATTRS = ("k", "activation_type", "swiglu_fusion", "normalize_routing_weights")

# og's decoder graph
INPUTS_EMBEDS = "inputs_embeds"
LOGITS = "logits"
SKIP_NORM = "SkipSimplifiedLayerNormalization"
LM_HEAD_MATMUL = LM_HEAD  # the LM head's MatMul (a quantized one: this name + "_Q4" / "_Q8")


def layer_residual(layer: int) -> str:
    """The residual stream entering layer ``layer``'s MLP block: og's post-attention
    SkipSimplifiedLayerNormalization's sum output, which the next layer's (or the final norm's)
    SkipSimplifiedLayerNormalization reads as its first input, beside this layer's MLP output."""
    return f"/model/layers.{layer}/post_attention_layernorm/output_3"


def moe_node(layer: int, part: str) -> str:
    """The name og gives a node of layer ``layer``'s expert block: ``part`` is ``router/MatMul``,
    ``router/Reshape`` or the op (``MoE``, ``QMoE``)."""
    return f"/model/layers.{layer}/moe/{part}"


def int64_constant_name(values) -> str:
    """og's name of a shared int64 constant (``make_reshape`` and friends create it on first use)."""
    return f"/model/constants/INT64/{list(values)}"


# --------------------------------------------------------------------------- versions
def _series(version: str) -> tuple[int, int]:
    major, minor = (version.split("+")[0].split(".") + ["0"])[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def version_problem(package: str, version: str) -> str | None:
    """Why ``version`` of ``package`` (a key of ``SUPPORTED``) is not one this file supports, or None."""
    supported = SUPPORTED[package][1]
    if _series(version) in supported:
        return None
    names = " or ".join(f"{a}.{b}.x" for a, b in supported)
    return f"{package} {version} is installed; the export's use of its internals (genai_qwen3vl/export/og_compat.py) supports {names}"


def check_versions(*packages: str) -> None:
    """An UpstreamVersionError, in one line, if an installed package (default: all of
    ``SUPPORTED``) is outside the releases this file was written for."""
    for package in packages or tuple(SUPPORTED):
        module = importlib.import_module(SUPPORTED[package][0])
        problem = version_problem(package, getattr(module, "__version__", "unknown"))
        if problem is not None:
            raise UpstreamVersionError(f"{problem}: install a supported one (scripts/setup.sh pins it in constraints.txt)")


# --------------------------------------------------------------------------- og's builder
def builder_module():
    """og's builder module (it puts og's ``builders`` package on sys.path)."""
    check_versions("onnxruntime-genai")
    return importlib.import_module(OG_BUILDER)


def builder_base(arch: Architecture) -> type:
    """og's builder class for ``arch``, after checking it still has the hooks we use."""
    builder_module()
    base = getattr(importlib.import_module(arch.og_builder_module), arch.og_builder_class, None)
    if base is None:
        raise UpstreamVersionError(
            f"onnxruntime-genai's {arch.og_builder_module} has no {arch.og_builder_class}; "
            "export/og_compat.py was written for another release"
        )
    hooks = BUILDER_HOOKS + (MOE_HOOKS if arch.experts is not None else ())
    missing = [name for name in hooks if not callable(getattr(base, name, None))]
    if missing:
        raise UpstreamVersionError(
            f"onnxruntime-genai's {arch.og_builder_class} has no {', '.join(missing)}; export/og_compat.py was written for another release"
        )
    return base


@contextlib.contextmanager
def dispatching_to(arch: Architecture, cls: type) -> Iterator[None]:
    """og's ``create_model`` instantiates ``cls`` where it would instantiate its own class for
    ``arch``, within the scope (og looks the class up by name in its builder module)."""
    module = sys.modules[OG_BUILDER]
    original = getattr(module, arch.og_builder_class)
    setattr(module, arch.og_builder_class, cls)
    try:
        yield
    finally:
        setattr(module, arch.og_builder_class, original)


def dispatch_as(parsed: dict, hf_class: str) -> None:
    """Make og's ``create_model`` dispatch on ``hf_class`` (the options ``parse_extra_options`` returned)."""
    parsed["hf_details"]["hf_config"].architectures = [hf_class]


# --------------------------------------------------------------------------- onnxruntime's quantizer
def quantize_matmul_4bits():
    """onnxruntime's own symmetric 4-bit block quantizer (what og's int4 uses), from its pybind
    module: ``(packed, w [K, N], scales, zero_points, block_size, N, K, is_symmetric)``."""
    check_versions("onnxruntime")
    return importlib.import_module(ORT_PYBIND).quantize_matmul_4bits


# --------------------------------------------------------------------------- anchors in a built graph
def decoder_anchor_problems(model, layers: int) -> list[str]:
    """What of the anchors above a decoder graph og's builder wrote (before our surgery) lacks:
    ``inputs_embeds`` and ``logits``, for every layer a SkipSimplifiedLayerNormalization reading
    ``layer_residual`` (with a second input made by some node), and the LM head's MatMul."""
    graph = model.graph
    problems = []
    if not any(i.name == INPUTS_EMBEDS for i in graph.input):
        problems.append(f"no {INPUTS_EMBEDS} input")
    if not any(o.name == LOGITS for o in graph.output):
        problems.append(f"no {LOGITS} output")
    produced = {o for n in graph.node for o in n.output}
    for layer in range(layers):
        residual = layer_residual(layer)
        readers = [n for n in graph.node if n.op_type == SKIP_NORM and len(n.input) > 1 and n.input[0] == residual]
        if len(readers) != 1 or readers[0].input[1] not in produced:
            problems.append(f"layer {layer}: {len(readers)} {SKIP_NORM} nodes read {residual} (one with a produced second input expected)")
    if not any(n.name.startswith(LM_HEAD_MATMUL) for n in graph.node):
        problems.append(f"no {LM_HEAD_MATMUL} node")
    return problems
