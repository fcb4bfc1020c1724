"""transformers, the reference: the model and processor every check compares against, and
the same model with the int4 decoder's weights (dequantized) put in."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np

from .. import onnx_format as fmt
from ..errors import ParityError, ReferenceStackError
from ..model.precisions import DTYPE_NAMES
from ..model.spec import Qwen3VLSpec

# transformers releases whose Qwen3-VL processing departs from the model's released behaviour
# (its processor in transformers 4.57.1): checking an export against them would call a wrong
# prompt right, so they are refused as the reference (setup.py's range leaves them out too)
DEPARTED_RELEASES = {
    "5.24": "its Qwen3-VL processor keeps an extra <|vision_start|>/<|vision_end|> pair around a video's "
    "frames, a prompt the model was not trained on (the released format, 4.57.1 and 5.25, has none)",
}


def check_reference_release(version: str) -> None:
    """Refuse a transformers release listed in ``DEPARTED_RELEASES``, in one line with the fix."""
    series = ".".join(version.split(".")[:2])
    if series in DEPARTED_RELEASES:
        raise ReferenceStackError(
            f"transformers {version} cannot be the reference: {DEPARTED_RELEASES[series]}; "
            f'install the tested one: pip install "transformers>=5.25,<6" (scripts/setup.sh pins it in constraints.txt)'
        )


@dataclasses.dataclass
class Reference:
    """transformers' model (fp32, eager) and processor (PIL image backend) for a checkpoint."""

    spec: Qwen3VLSpec
    model: object
    processor: object

    @classmethod
    def load(cls, checkpoint_dir: str | Path) -> "Reference":
        import torch
        import transformers
        from transformers import AutoImageProcessor, AutoProcessor

        check_reference_release(transformers.__version__)
        spec = Qwen3VLSpec.from_checkpoint(checkpoint_dir)
        model = (
            spec.architecture.transformers_class(spec.architecture.hf_class)
            .from_pretrained(str(checkpoint_dir), dtype=torch.float32, attn_implementation="eager")
            .eval()
        )
        processor = AutoProcessor.from_pretrained(str(checkpoint_dir))
        # og's stock image processor mirrors transformers' PIL backend
        processor.image_processor = AutoImageProcessor.from_pretrained(str(checkpoint_dir), backend="pil")
        return cls(spec=spec, model=model, processor=processor)


def dequantize_blocks(
    packed: np.ndarray, scales: np.ndarray, block: int, k: int, bits: int = 4, zero_points: np.ndarray | None = None
) -> np.ndarray:
    """``onnx_format.dequantize_blocks`` for the 4- and 8-bit weights the export writes; a
    ParityError for any other width."""
    if bits not in (4, 8):
        raise ParityError(f"{bits}-bit weights are not dequantized here")
    return fmt.dequantize_blocks(packed, scales, block, k, bits, zero_points)


def matmulnbits_weights(model_path: Path) -> dict[str, np.ndarray]:
    """Dequantize every MatMulNBits weight of a graph: {og weight name: W [K, N] float32}
    (4- or 8-bit, with or without zero points)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    nodes = [n for n in model.graph.node if n.op_type == fmt.MATMUL_NBITS]
    arrays = fmt.read_initializers(model, Path(model_path).parent, [name for n in nodes for name in n.input[1:4] if name])
    weights = {}
    for node in nodes:
        attrs = {a.name: a.i for a in node.attribute}
        K, N, block, bits = attrs["K"], attrs["N"], attrs["block_size"], attrs["bits"]
        scales = arrays[node.input[2]].astype(np.float32).reshape(N, -1)
        zeros = arrays[node.input[3]].reshape(N, -1) if len(node.input) > 3 and node.input[3] else None
        w = dequantize_blocks(arrays[node.input[1]].reshape(N, -1), scales, block, K, bits, zeros)
        weights[fmt.float_name(node.input[1])] = np.ascontiguousarray(w.T)
    return weights


def qmoe_weights(model_path: Path) -> dict[int, dict[str, np.ndarray]]:
    """Dequantize every QMoE node's experts: {text layer: {"gate_up": [E, 2I, H], "down": [E, H, I]}}
    in transformers' layout. The 4-bit values are packed two per byte along K (low nibble first),
    with the implicit zero point 8 and one scale per ``block_size`` values of K; og's fused
    SwiGLU interleaves gate and up rows [g0, u0, g1, u1, ...], transformers stacks [gate | up]."""
    import re

    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    nodes = [n for n in model.graph.node if n.op_type == fmt.QMOE]
    arrays = fmt.read_initializers(model, Path(model_path).parent, [n.input[i] for n in nodes for i in (2, 3, 5, 6)])
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
            deq[proj] = dequantize_blocks(packed, arrays[node.input[s]], block, 2 * packed.shape[-1])
        gate_up = deq["gate_up"]
        experts[layer] = {"gate_up": np.concatenate([gate_up[:, 0::2], gate_up[:, 1::2]], axis=1), "down": deq["down"]}
    return experts


EMBED_TOKENS = "model.language_model.embed_tokens.weight"


def embedding_table(model_path: Path) -> np.ndarray | None:
    """The embedding graph's token table dequantized, [V, H] float32; None when it is stored in
    float (a plain Gather)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    nodes = [n for n in model.graph.node if n.op_type == fmt.GATHER_BLOCK_QUANTIZED]
    if not nodes:
        return None
    node = nodes[0]
    attrs = {a.name: a.i for a in node.attribute}
    names = [node.input[0], node.input[2]] + ([node.input[3]] if len(node.input) > 3 and node.input[3] else [])
    arrays = fmt.read_initializers(model, Path(model_path).parent, names)
    data, scales = arrays[node.input[0]], arrays[node.input[2]]
    zeros = arrays[names[2]] if len(names) > 2 else None
    hidden = data.shape[1] * 8 // attrs["bits"]
    return dequantize_blocks(data, scales, attrs["block_size"], hidden, attrs["bits"], zeros)


def quantized_text_weights(folder: Path, arch=None) -> dict[str | tuple[str, ...], np.ndarray]:
    """Every quantized dense text weight of an exported folder, dequantized, by transformers'
    parameter name and in transformers' layout: the decoder's MatMulNBits weights, the LM head
    (``lm_head.weight``) and the embedding table when it is quantized; a weight og fuses from
    several (``Architecture.og_fused_weights``) under the tuple of their names. (QMoE experts:
    ``qmoe_weights``.)"""
    import re

    from ..model.architectures import QWEN3_VL

    arch = arch or QWEN3_VL
    folder = Path(folder)
    og = matmulnbits_weights(folder / "model.onnx")
    out: dict[str | tuple[str, ...], np.ndarray] = {}
    for og_pattern, hf_pattern, parts in arch.og_to_hf_weights:
        for p in parts:
            pattern = re.compile(re.escape(og_pattern.format(i="@", p=p)).replace("@", r"(\d+)") + "$")
            for name in [n for n in og if pattern.match(n)]:
                out[hf_pattern.format(i=int(pattern.match(name).group(1)), p=p)] = og.pop(name).T
    # og's fused projections (Qwen3.5's q|k|v), keyed by the transformers names they stack
    for og_pattern, hf_names in arch.og_fused_weights:
        pattern = re.compile(re.escape(og_pattern.format(i="@")).replace("@", r"(\d+)") + "$")
        for name in [n for n in og if pattern.match(n)]:
            i = int(pattern.match(name).group(1))
            out[tuple(hf.format(i=i) for hf in hf_names)] = og.pop(name).T
    lm = og.pop(arch.og_lm_head_weight, None)
    if lm is not None:
        out["lm_head.weight"] = lm.T
    if og:
        raise ParityError(f"quantized weights with no transformers counterpart: {sorted(og)}")
    table = embedding_table(folder / "embedding.onnx") if (folder / "embedding.onnx").is_file() else None
    if table is not None:
        out[EMBED_TOKENS] = table
    return out


def quantized_vision_weights(folder: Path, arch=None) -> dict[str, np.ndarray]:
    """The vision graph's quantized Linear weights (``--vision_quant``), dequantized, by
    transformers' parameter name, [N, K]; empty for a float vision graph."""
    from ..model.architectures import QWEN3_VL

    prefix = (arch or QWEN3_VL).vision_weight_prefixes[0]  # transformers' name of the tower ("model.visual.")
    path = Path(folder) / "vision.onnx"
    if not path.is_file():
        return {}
    # the exported module holds transformers' tower as ``visual``: its initializers are "visual.<name>"
    return {prefix + name.removeprefix("visual."): w.T for name, w in matmulnbits_weights(path).items()}


def dequantized_reference(ref: Reference, out_dir: Path) -> Reference:
    """A copy of the reference whose quantized weights are the export's, dequantized (decoder,
    LM head, embedding table, experts, a quantized vision tower's Linear weights): the quantized
    graphs must compute exactly what transformers computes with them."""
    import torch

    weights = quantized_text_weights(Path(out_dir), ref.spec.architecture) | quantized_vision_weights(Path(out_dir), ref.spec.architecture)
    experts = qmoe_weights(Path(out_dir) / "model.onnx")
    model = copy.deepcopy(ref.model)
    params = dict(model.named_parameters())
    with torch.no_grad():
        lm = weights.pop("lm_head.weight", None)
        if lm is not None:  # untie: the LM head and the embedding table are quantized apart
            model.lm_head.weight = torch.nn.Parameter(torch.from_numpy(np.ascontiguousarray(lm)))
        table = weights.pop(EMBED_TOKENS, None)
        if table is not None:
            model.get_input_embeddings().weight = torch.nn.Parameter(torch.from_numpy(table))
        for name, w in list(weights.items()):
            if isinstance(name, tuple):  # a fused projection: its parts' rows, in order
                weights.pop(name)
                starts = np.cumsum([0] + [params[part].shape[0] for part in name if part in params])
                if len(starts) != len(name) + 1 or starts[-1] != w.shape[0]:
                    raise ParityError(f"{out_dir}: a fused quantized weight of {w.shape[0]} rows does not split into {list(name)}")
                weights.update({part: w[starts[k] : starts[k + 1]] for k, part in enumerate(name)})
        for name, w in weights.items():
            if name not in params:
                raise ParityError(f"{out_dir}: a quantized weight {name} that transformers' {ref.spec.hf_class} lacks")
            params[name].copy_(torch.from_numpy(np.ascontiguousarray(w)))
        layout = ref.spec.architecture.experts
        for i, tensors in sorted(experts.items()):
            if layout is None:
                raise ParityError(f"{out_dir}: QMoE experts in layer {i} of a {ref.spec.hf_class} decoder")
            params[layout.hf_gate_up.format(i=i)].copy_(torch.from_numpy(tensors["gate_up"]))
            params[layout.hf_down.format(i=i)].copy_(torch.from_numpy(tensors["down"]))
    return Reference(spec=ref.spec, model=model, processor=ref.processor)


def in_dtype(ref: Reference, dtype: str, device: str = "cpu") -> Reference:
    """A copy of the reference with its model in ``dtype`` ("fp32", "fp16", "bf16") on ``device``."""
    import torch

    if dtype == "fp32" and device == "cpu":
        return ref
    if device != "cpu":
        # fp32 means fp32 on the GPU too: cuDNN's convolutions (the vision patch embedding) default to TF32
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    model = copy.deepcopy(ref.model).to(device, getattr(torch, DTYPE_NAMES[dtype]))
    return Reference(spec=ref.spec, model=model, processor=ref.processor)
