"""Qwen3-VL-MoE's expert layers, written by onnxruntime-genai's builder: a mixin of og's builder
class for the architecture (``og_builder.builder_class`` puts it in front of og's
``Qwen3VLTextModel``), driving og 0.18's MoE machinery (the one its Qwen3.5-MoE and gpt-oss
builders use) for the layers Qwen3-VL-MoE routes through experts. The builder methods and
attribute keys of og's this relies on, and the node names, are listed in ``og_compat`` (its
contract test builds a graph with this class and finds them).

Per text layer ``i``, as transformers computes it (``Qwen3VLMoeTextSparseMoeBlock``)::

    x --> router MatMul [H, E] --> Reshape [-1, E] (raw logits) --+
    |                                                             v
    +---------------------------------------------> com.microsoft.MoE / QMoE --> (next layer's
                     experts: fc1 = [gate | up] interleaved       k=top_k,        SkipSimplified-
                     rows [E, 2I, H], fc2 = down [E, H, I],       swiglu_fusion=1, LayerNormalization)
                     zero biases                                  normalize_routing_weights=1

onnxruntime's MoE kernels take a softmax over all experts of the router logits, keep the top k
and divide them by their sum: exactly transformers' router. A layer transformers gives a dense
MLP (``mlp_only_layers``, ``decoder_sparse_step``) gets og's dense MLP of ``intermediate_size``.

The export streams. og's builder would load the whole checkpoint (60 GB for 30B-A3B in bf16) and
hold every expert until the graph is saved. Here the model is built on the meta device and only
the tensors outside the experts are read (attention, norms, routers, embedding, LM head: about 3
GB for 30B-A3B); each layer's experts are read from the safetensors files when og's saver writes
them (``ir.LazyTensor``), laid out (transposed from the hub layout where the shape says so,
interleaved) and cast, or quantized to QMoE 4-bit one expert at a time, then dropped. The
export's peak memory is the non-expert weights plus one layer's experts, whatever the depth.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import CheckpointError
from ..model.architectures import Architecture
from ..model.spec import expert_spec
from . import og_compat


def moe_builder_mixin(arch: Architecture) -> type:
    """The mixin (placed before og's builder class) that writes ``arch``'s expert layers."""
    import onnx_ir as ir
    import torch
    from onnx_ir.tensor_adapters import TorchTensor, to_torch_dtype

    layout = arch.experts

    class ExpertLayersBuilder:
        def __init__(self, config, io_dtype, onnx_dtype, ep, cache_dir, extra_options):
            super().__init__(config, io_dtype, onnx_dtype, ep, cache_dir, extra_options)
            text = getattr(config, "text_config", config)
            self.experts = expert_spec(text.to_dict())  # which layers route through experts
            # og's Model sets intermediate_size to moe_intermediate_size whenever the config has
            # one; the dense layers need the dense width back when they are written
            self.moe_intermediate_size = self.experts.intermediate_size
            self.dense_intermediate_size = int(text.intermediate_size)
            # Qwen3-VL-MoE's experts: SwiGLU with gate and up fused (interleaved rows), the router's
            # top-k weights renormalised to sum to 1
            self.moe_attrs.update(activation_type="swiglu", swiglu_fusion=1, normalize_routing_weights=True)
            self._checkpoint = None  # CheckpointTensors, opened by load_weights
            self._quantized: dict[tuple[int, str], list] = {}
            self._qmoe_shapes: dict[tuple[int, int], tuple] = {}

        # ------------------------------------------------------------------ loading
        def load_weights(self, input_path):
            """The model on the meta device with only the tensors outside the experts loaded."""
            self._checkpoint = CheckpointTensors(Path(self.model_name_or_path), layout)
            return self._checkpoint.model_without_experts(arch)

        # ------------------------------------------------------------------ layers
        def get_moe_module(self, layer_id, layer):
            return layer.mlp

        def make_moe(self, layer_id, moe, root_input):
            # og's make_layer calls make_moe for every layer of a model with experts
            expert_layer = self.experts.is_expert_layer(layer_id)
            if expert_layer != hasattr(moe, "experts"):
                raise CheckpointError(
                    f"text layer {layer_id} of the checkpoint does not match its config's decoder_sparse_step/mlp_only_layers"
                )
            if expert_layer:
                super().make_moe(layer_id, moe, root_input)
                return
            saved, self.intermediate_size = self.intermediate_size, self.dense_intermediate_size
            try:
                self.make_mlp(layer_id, moe, root_input)
            finally:
                self.intermediate_size = saved

        def make_moe_preprocessing(self, layer_id, moe, root_input):
            names = self.make_moe_expert_names(layer_id)
            quantized = self.moe_attrs["op_type"] == "QMoE"
            for proj in ("gate_up", "down"):
                if quantized:
                    self._register(
                        names[f"{proj}_weight"],
                        self._qmoe_shape(layer_id, proj, 0),
                        ir.DataType.UINT8,
                        lambda p=proj: self._qmoe(layer_id, p, 0),
                    )
                    self._register(
                        names[f"{proj}_scales"],
                        self._qmoe_shape(layer_id, proj, 1),
                        self.io_dtype,
                        lambda p=proj: self._qmoe(layer_id, p, 1),
                    )
                else:
                    shape = self._checkpoint.expert_shape(layer_id, proj)
                    self._register(
                        names[f"{proj}_weight"],
                        shape,
                        self.io_dtype,
                        lambda p=proj: self._checkpoint.experts(layer_id, p, to_torch_dtype(self.io_dtype)),
                    )
            if quantized:
                # og sets the QMoE block_size attribute as a side effect of quantizing eagerly: the
                # configured block size, or none for per-channel scales (qmoe_block_size <= 0)
                if self.quant_attrs["qmoe_block_size"] > 0:
                    self.moe_attrs["block_size"] = self.quant_attrs["qmoe_block_size"]
                else:
                    self.moe_attrs.pop("block_size", None)
            experts = self.moe_attrs["num_experts"]
            self.make_initializer(torch.zeros(experts, 2 * self.moe_intermediate_size), names["gate_up_bias"], to=self.io_dtype)
            self.make_initializer(torch.zeros(experts, self.hidden_size), names["down_bias"], to=self.io_dtype)

        def make_moe_router(self, layer_id, moe, root_input):
            basename = og_compat.moe_node(layer_id, "router/MatMul")
            # the router picks the experts: a quantized router can flip near-tied choices
            self.exclude_node_from_quantization(basename)
            matmul = self.make_matmul(moe.gate, basename, root_input)
            self.make_reshape(
                og_compat.moe_node(layer_id, "router/Reshape"),
                [f"{matmul}/output_0", og_compat.int64_constant_name([-1, self.moe_attrs["num_experts"]])],
                dtype=self.io_dtype,
                shape=self.make_moe_router_shape(),
            )

        def make_moe_subgraph(self, layer_id, moe, root_input):
            op = self.moe_attrs["op_type"]
            names = self.make_moe_expert_names(layer_id)
            name = og_compat.moe_node(layer_id, op)
            self.make_moe_op(
                name,
                root_input=root_input,
                router_probs=og_compat.moe_node(layer_id, "router/Reshape/output_0"),  # raw logits: the op takes the softmax
                weight1=names["gate_up_weight"],
                scales1=names["gate_up_scales"] if op == "QMoE" else "",
                bias1=names["gate_up_bias"],
                weight2=names["down_weight"],
                scales2=names["down_scales"] if op == "QMoE" else "",
                bias2=names["down_bias"],
            )
            self.layernorm_attrs["skip_input"] = f"{name}/output_0"

        # ------------------------------------------------------------------ expert tensors
        def _register(self, name, shape, dtype, compute):
            def tensor():
                return TorchTensor(compute(), name=name)

            self.make_initializer(ir.LazyTensor(tensor, dtype=dtype, shape=ir.Shape(shape), name=name), name)

        def _qmoe_shape(self, layer_id, proj, which):
            """The shape og's quantizer gives a projection's QMoE weights (0) or scales (1): found
            by quantizing one expert-sized matrix of ones (the layout depends on the EP)."""
            e, n, k = self._checkpoint.expert_shape(layer_id, proj)
            if (n, k) not in self._qmoe_shapes:
                q, s = self.make_qmoe_weights(torch.ones(n, k))
                self._qmoe_shapes[(n, k)] = (tuple(q.shape), tuple(s.shape))
            return (e, *self._qmoe_shapes[(n, k)][which])

        def _qmoe(self, layer_id, proj, which):
            """QMoE weights (0) or scales (1) of one layer's projection, quantized by og's own
            per-expert quantizer (the encoding of its EP); computed once for both, kept until both
            were written."""
            key = (layer_id, proj)
            if key not in self._quantized:
                pair = None
                for e, w in self._checkpoint.each_expert(layer_id, proj):
                    q, s = self.make_qmoe_weights(w.float())
                    if pair is None:
                        experts = self.moe_attrs["num_experts"]
                        pair = [
                            torch.empty((experts, *q.shape), dtype=torch.uint8),
                            torch.empty((experts, *s.shape), dtype=to_torch_dtype(self.io_dtype)),
                        ]
                    pair[0][e], pair[1][e] = q, s
                    del q, s, w
                self._quantized[key] = pair
                _return_freed_heap()
            pair = self._quantized[key]
            value, pair[which] = pair[which], None
            if all(v is None for v in pair):
                del self._quantized[key]
            return value

    return ExpertLayersBuilder


def _return_freed_heap() -> None:
    """Give the C heap's free pages back to the system (glibc ``malloc_trim``). Quantizing an
    expert layer allocates and frees many expert-sized buffers; without this their freed pages
    stay in the process, fragmented, and the export's RSS creeps up layer after layer."""
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:  # not glibc
            pass


class CheckpointTensors:
    """Reads a Qwen3-VL-MoE checkpoint's tensors by name from its safetensors files."""

    def __init__(self, folder: Path, layout):
        from .weights import safetensors_files

        self.folder = folder
        self.layout = layout
        # the decoder stage reads our text-only view, whose links lead into the checked checkpoint
        self.files = safetensors_files(folder, contained=False)
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        text = config.get("text_config", config)
        self.experts_spec = expert_spec(text)
        self.hidden = int(text["hidden_size"])

    def _file(self, name: str) -> Path:
        if name not in self.files:
            raise CheckpointError(f"{self.folder} has no tensor {name}; the checkpoint is incomplete")
        return self.files[name]

    def _read(self, name: str):
        from safetensors import SafetensorError, safe_open

        path = self._file(name)
        try:
            with safe_open(str(path), framework="pt") as f:
                return f.get_tensor(name)
        except SafetensorError as exc:
            raise CheckpointError(f"{path} cannot be read ({exc}); it is truncated or corrupt, re-download it") from None

    def _shape(self, name: str) -> tuple[int, ...]:
        from safetensors import safe_open

        with safe_open(str(self._file(name)), framework="pt") as f:
            return tuple(f.get_slice(name).get_shape())

    def model_without_experts(self, arch: Architecture):
        """transformers' model built on the meta device, with every text tensor but the experts
        loaded (in the checkpoint's dtype); the experts stay on the meta device, and so does the
        token embedding unless the LM head is tied to it."""
        import torch
        import transformers

        config = getattr(transformers, arch.config_class).from_pretrained(str(self.folder))
        with torch.device("meta"):
            model = arch.transformers_class(arch.hf_class)(config)
        wanted = {
            name for name, _ in model.named_parameters() if not self.layout.is_expert_weight(name) and not name.startswith("model.visual.")
        }
        tied = config.get_text_config().tie_word_embeddings or getattr(config, "tie_word_embeddings", False)
        embedding = "model.language_model.embed_tokens.weight"
        state = {}
        for name in sorted(wanted):
            if name == "lm_head.weight" and tied and name not in self.files:
                continue
            if name == embedding and not tied:
                continue  # the decoder takes inputs_embeds (embedding.onnx holds the table)
            state[name] = self._read(name)
        model.load_state_dict(state, strict=False, assign=True)
        if "lm_head.weight" not in state:
            model.lm_head.weight = model.model.language_model.embed_tokens.weight
        return model.eval()

    def _out_inner(self, proj: str) -> tuple[int, int]:
        """og's [N, K] of one expert: gate_up [2I, H] (rows [gate | up]), down [H, I]."""
        width = self.experts_spec.intermediate_size
        return (2 * width, self.hidden) if proj == "gate_up" else (self.hidden, width)

    def expert_shape(self, layer: int, proj: str) -> tuple[int, int, int]:
        """og's [E, N, K] shape of a projection; a CheckpointError if the stored tensor has neither
        that shape nor the hub's transposed one."""
        out, inner = self._out_inner(proj)
        name = self._name(layer, proj)
        stored = self._shape(name)
        e = self.experts_spec.num_experts
        if len(stored) != 3 or stored[0] != e or stored[1:] not in ((out, inner), (inner, out)):
            raise CheckpointError(
                f"{name} has shape {list(stored)}; the config (num_experts, hidden_size, moe_intermediate_size) says "
                f"[{e}, {out}, {inner}] or, as the hub files hold it, [{e}, {inner}, {out}]: the checkpoint does not "
                "match its config.json"
            )
        return (e, out, inner)

    def check_experts(self, layers) -> None:
        """Every expert layer's tensors are there with the config's shapes (headers only)."""
        expected = (self.experts_spec.num_experts, self.hidden)
        for layer in layers:
            for proj in ("gate_up", "down"):
                self.expert_shape(layer, proj)
            router = self.layout.router.format(i=layer)
            if self._shape(router) != expected:
                raise CheckpointError(f"{router} has shape {list(self._shape(router))}; the config says {list(expected)}")

    def _name(self, layer: int, proj: str) -> str:
        return (self.layout.gate_up if proj == "gate_up" else self.layout.down).format(i=layer)

    def experts(self, layer: int, proj: str, dtype=None):
        """One layer's expert projection as og's MoE ops take it: [E, N, K] in ``dtype`` (default:
        as stored), see ``each_expert``."""
        import torch

        out = None
        for e, w in self.each_expert(layer, proj):
            if out is None:
                out = torch.empty((self.experts_spec.num_experts, *w.shape), dtype=dtype or w.dtype)
            out[e] = w
        return out

    def each_expert(self, layer: int, proj: str):
        """(expert, [N, K] weight) for each expert of one layer's projection, read one expert at a
        time: transposed from the hub layout where the shape says so (as transformers does on load:
        a square shape is taken as stored), gate_up's rows interleaved [g0, u0, g1, u1, ...] for
        swiglu_fusion=1."""
        import torch
        from safetensors import SafetensorError, safe_open

        name = self._name(layer, proj)
        out, inner = self._out_inner(proj)
        width = self.experts_spec.intermediate_size
        path = self._file(name)
        try:
            with safe_open(str(path), framework="pt") as f:
                tensor = f.get_slice(name)
                for e in range(tensor.get_shape()[0]):
                    w = tensor[e : e + 1][0]
                    if tuple(w.shape) != (out, inner):
                        w = w.T
                    if proj == "gate_up":
                        w = torch.stack([w[:width], w[width:]], dim=1).reshape(out, inner)
                    yield e, w.contiguous()
        except SafetensorError as exc:
            raise CheckpointError(f"{path} cannot be read ({exc}); it is truncated or corrupt, re-download it") from None
