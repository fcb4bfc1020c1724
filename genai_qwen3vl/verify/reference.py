"""transformers, the reference: the model and processor every check compares against, and
the same model with the int4 decoder's weights (dequantized) put in."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np

from ..errors import ParityError
from ..model.spec import Qwen3VLSpec


@dataclasses.dataclass
class Reference:
    """transformers' model (fp32, eager) and processor (PIL image backend) for a checkpoint."""

    spec: Qwen3VLSpec
    model: object
    processor: object

    @classmethod
    def load(cls, checkpoint_dir: str | Path) -> "Reference":
        import torch
        from transformers import AutoImageProcessor, AutoProcessor

        spec = Qwen3VLSpec.from_checkpoint(checkpoint_dir)
        model = spec.arch.transformers_class(spec.arch.hf_class).from_pretrained(
            str(checkpoint_dir), dtype=torch.float32, attn_implementation="eager"
        ).eval()
        processor = AutoProcessor.from_pretrained(str(checkpoint_dir))
        # og's stock image processor mirrors transformers' PIL backend
        processor.image_processor = AutoImageProcessor.from_pretrained(str(checkpoint_dir), backend="pil")
        return cls(spec=spec, model=model, processor=processor)


def dequantize_int4(packed: np.ndarray, scales: np.ndarray, block: int, k: int) -> np.ndarray:
    """Symmetric block-wise 4-bit weights as MatMulNBits and QMoE store them: two values per
    byte along the last axis (low nibble first), zero point 8, one scale per ``block`` values;
    returns float32 [..., k] (the blocks' padding past ``k`` cut off)."""
    q = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(*packed.shape[:-1], -1).astype(np.float32)
    return ((q - 8.0) * np.repeat(scales.astype(np.float32), block, axis=-1)[..., : q.shape[-1]])[..., :k]


def matmulnbits_weights(model_path: Path) -> dict[str, np.ndarray]:
    """Dequantize every MatMulNBits weight of a graph: {og weight name: W [K, N] float32}.
    4-bit values are packed two per byte (low nibble first) per block of ``block_size`` along K;
    symmetric quantization has the implicit zero point 8."""
    import onnx

    from ..export.quantize import read_initializers

    model = onnx.load(str(model_path), load_external_data=False)
    nodes = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    arrays = read_initializers(model, Path(model_path).parent, [name for n in nodes for name in n.input[1:3]])
    weights = {}
    for node in nodes:
        attrs = {a.name: a.i for a in node.attribute}
        if attrs["bits"] != 4:
            raise ParityError(f"{node.name}: only 4-bit MatMulNBits is dequantized here")
        K, N, block = attrs["K"], attrs["N"], attrs["block_size"]
        packed = arrays[node.input[1]]
        scales = arrays[node.input[2]].astype(np.float32).reshape(N, -1)
        if len(node.input) > 3 and node.input[3]:
            raise ParityError(f"{node.name}: asymmetric (zero-point) weights are not dequantized here")
        w = dequantize_int4(packed.reshape(N, -1), scales, block, K)
        weights[node.input[1].rsplit("_Q4", 1)[0]] = np.ascontiguousarray(w.T)
    return weights


def qmoe_weights(model_path: Path) -> dict[int, dict[str, np.ndarray]]:
    """Dequantize every QMoE node's experts: {text layer: {"gate_up": [E, 2I, H], "down": [E, H, I]}}
    in transformers' layout. The 4-bit values are packed two per byte along K (low nibble first),
    with the implicit zero point 8 and one scale per ``block_size`` values of K; og's fused
    SwiGLU interleaves gate and up rows [g0, u0, g1, u1, ...], transformers stacks [gate | up]."""
    import re

    import onnx

    from ..export.quantize import read_initializers

    model = onnx.load(str(model_path), load_external_data=False)
    nodes = [n for n in model.graph.node if n.op_type == "QMoE"]
    arrays = read_initializers(model, Path(model_path).parent, [n.input[i] for n in nodes for i in (2, 3, 5, 6)])
    experts = {}
    for node in nodes:
        attrs = {a.name: a.i for a in node.attribute}
        if attrs.get("expert_weight_bits") != 4 or "block_size" not in attrs:
            raise ParityError(f"{node.name}: only block-wise 4-bit QMoE is dequantized here")
        if any(node.input[i] for i in range(11, len(node.input))):
            raise ParityError(f"{node.name}: asymmetric (zero-point) experts are not dequantized here")
        layer = int(re.search(r"layers\.(\d+)/", node.name).group(1))
        block = attrs["block_size"]
        deq = {}
        for proj, (w, s) in (("gate_up", (2, 3)), ("down", (5, 6))):
            packed = arrays[node.input[w]]
            deq[proj] = dequantize_int4(packed, arrays[node.input[s]], block, 2 * packed.shape[-1])
        gate_up = deq["gate_up"]
        experts[layer] = {"gate_up": np.concatenate([gate_up[:, 0::2], gate_up[:, 1::2]], axis=1), "down": deq["down"]}
    return experts


def dequantized_reference(ref: Reference, out_dir: Path) -> Reference:
    """A copy of the reference whose text weights are the int4 decoder's, dequantized: the int4
    graph must compute exactly what transformers computes with them."""
    import torch

    weights = matmulnbits_weights(Path(out_dir) / "model.onnx")
    experts = qmoe_weights(Path(out_dir) / "model.onnx")
    model = copy.deepcopy(ref.model)
    params = dict(model.named_parameters())
    layers = ref.spec.text.num_hidden_layers
    with torch.no_grad():
        for og_pattern, hf_pattern, parts in ref.spec.arch.og_to_hf_weights:
            for i in range(layers):
                for p in parts:
                    name = hf_pattern.format(i=i, p=p)
                    if name not in params and i in experts:  # an expert layer has no dense MLP
                        continue
                    params[name].copy_(torch.from_numpy(weights.pop(og_pattern.format(i=i, p=p)).T))
        layout = ref.spec.arch.experts
        for i, tensors in sorted(experts.items()):
            if layout is None:
                raise ParityError(f"{out_dir}: QMoE experts in layer {i} of a {ref.spec.architecture} decoder")
            params[layout.hf_gate_up.format(i=i)].copy_(torch.from_numpy(tensors["gate_up"]))
            params[layout.hf_down.format(i=i)].copy_(torch.from_numpy(tensors["down"]))
        lm = weights.pop(ref.spec.arch.og_lm_head_weight, None)
        if lm is not None:  # untie: the embedding graph keeps the full-precision table
            model.lm_head.weight = torch.nn.Parameter(torch.from_numpy(lm.T.copy()))
    if weights:
        raise ParityError(f"quantized weights with no transformers counterpart: {sorted(weights)}")
    return Reference(spec=ref.spec, model=model, processor=ref.processor)




def in_dtype(ref: Reference, dtype: str, device: str = "cpu") -> Reference:
    """A copy of the reference with its model in ``dtype`` ("fp32", "fp16", "bf16") on ``device``."""

    from ..export.torch_export import torch_dtype

    if dtype == "fp32" and device == "cpu":
        return ref
    model = copy.deepcopy(ref.model).to(device, torch_dtype(dtype))
    return Reference(spec=ref.spec, model=model, processor=ref.processor)
