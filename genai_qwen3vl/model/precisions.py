"""What each precision means, declared once: one record per (precision, execution provider).

A ``Target`` says which dtypes flow between the graphs, which attention op og's builder must
write, the int4 defaults, how ``--validate`` can check it on a CPU and the parity tolerances
(the largest differences against transformers that pass). The command line's choices, the
exporter, the config writer, the validation and the tests all read this table; nowhere else
compares precision strings. A pair that cannot be exported correctly is listed in ``REFUSED``
with the reason the command line prints.

Adding a precision means one ``Precision`` in ``PRECISIONS`` (and its parity tests, which the
guard test asks for).
"""

from __future__ import annotations

import dataclasses

# our names of the float types -> numpy's and torch's (torch.float32, ...; bfloat16 via ml_dtypes in numpy)
DTYPE_NAMES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
FLOAT_DTYPES = tuple(DTYPE_NAMES)
EXECUTION_PROVIDERS = ("cpu", "cuda")
INT4_BLOCK_SIZES = (16, 32, 64, 128, 256)
# mixture-of-experts checkpoints: onnxruntime's 4-bit QMoE kernels take these block sizes only
QMOE_BLOCK_SIZES = (32, 64, 128)
# onnxruntime's CUDA 4-bit QMoE kernel tiles both expert MatMuls' K axes, the hidden size and the
# expert width (moe_intermediate_size), by 64 (its interleaved-weight K tile)
QMOE_CUDA_WIDTH_MULTIPLE = 64
INT4_ACCURACY_LEVELS = (0, 1, 2, 3, 4)
DEFAULT_INT4_BLOCK_SIZE = 32
ARTIFACTS = ("vision", "embedding", "decoder", "end_to_end")


# --------------------------------------------------------------------------- int4 layouts
# MatMuls left in float: a mixture-of-experts router (its logits pick the experts; 4-bit router
# weights would flip near-tied choices, and the router is 0.2% of an expert layer's weights),
# Qwen3.5-MoE's shared-expert gate (one output, whose sigmoid scales the whole shared expert), and
# Qwen3.5's linear-attention b and a projections (one output per value head: the update strength
# and the decay; og's own int4 keeps them in float)
KEEP_FLOAT = ("/moe/router/MatMul", "/shared_expert_gate/MatMul", "/linear_attn/b_proj/MatMul", "/linear_attn/a_proj/MatMul")
LM_HEAD = "/lm_head/MatMul"


@dataclasses.dataclass(frozen=True)
class QuantLayout:
    """How ``-p int4 -e cpu`` quantizes the text weights: every MatMul on a constant 2-D float
    weight becomes a ``MatMulNBits`` of 4 bits, or 8 for the MatMuls whose names contain one of
    ``eight_bit``; blocks of ``block_size`` along K, one float32 scale per block and, unless
    ``symmetric``, one zero point per block; a block's largest magnitude maps to the end of the
    range (onnxruntime's and og's rule: the default layout is byte for byte og's own int4).
    The embedding table is block-quantized along H with ``table_bits``: onnxruntime maps it from
    its file and reads only the gathered rows, so its bits cost disk, not memory, and 8 bits keep
    it within 0.5 % of the checkpoint (a 4-bit table made the 2B-shaped model's next-token KL
    against fp32 7x an 8-bit one's: 9.3e-5 against 1.3e-5)."""

    block_size: int = DEFAULT_INT4_BLOCK_SIZE
    accuracy_level: int | None = 4
    symmetric: bool = True
    eight_bit: tuple[str, ...] = ()
    keep_float: tuple[str, ...] = KEEP_FLOAT
    table_bits: int = 8
    # the bits of every weight not named in ``eight_bit``
    default_bits: int = 4

    def bits(self, node_name: str) -> int:
        return 8 if any(part in node_name for part in self.eight_bit) else self.default_bits


# --int4_recipe: named layouts (block size and accuracy level come from their own flags).
# Why there is no searched-scale recipe: docs/decisions/quantization_alternatives.md.
INT4_RECIPES: dict[str, QuantLayout] = {
    # og's own int4: every weight 4-bit, symmetric, largest magnitude to the range's end
    "rtn": QuantLayout(),
    # 8 bits for the LM head, attention v and the MLP down projection (the tensors llama.cpp's
    # Q4_K_M keeps at 6 bits), og's 4 bits elsewhere
    "mixed": QuantLayout(eight_bit=(LM_HEAD, "/v_proj/", "/down_proj/")),
}
DEFAULT_INT4_RECIPE = "rtn"

# --vision_quant (-e cpu): the vision tower's Linear weights block-quantized as MatMulNBits
# (its attention, norms, position embedding and patch projection stay fp32); what each costs
# in feature error, encode time and memory is measured in docs/quantization.md.
VISION_QUANT: dict[str, QuantLayout] = {
    "int8": QuantLayout(default_bits=8, accuracy_level=1),
    "int4": QuantLayout(default_bits=4, accuracy_level=1),
}


# --------------------------------------------------------------------------- tolerances
class Bound(float):
    """An absolute tolerance, widened for large values by a relative part: a difference ``d``
    against a reference whose largest magnitude is ``scale`` passes when
    ``d <= max(absolute, relative * scale)``. fp32 rounding grows with the values (logits of a
    real 2048-wide model are ~10x a tiny test model's); the tiny models stay under ``absolute``."""

    relative: float

    def __new__(cls, absolute: float, relative: float = 0.0) -> "Bound":
        bound = float.__new__(cls, absolute)
        bound.relative = relative
        return bound

    def limit(self, scale: float) -> float:
        return max(float(self), self.relative * scale)


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """Largest max-abs difference against transformers that passes, per artifact: ``vision``
    (every feature set), ``embedding``, ``decoder`` (raw ORT logits, prefill and decode steps)
    and ``end_to_end`` (og's logits at every generated step, via the stock og API).
    ``token_steps``: how many greedy steps must agree token for token."""

    vision: Bound
    embedding: Bound
    decoder: Bound
    end_to_end: Bound
    token_steps: int

    def of(self, artifact: str) -> Bound:
        return getattr(self, artifact)


_FP32_BOUND = Bound(1e-4, 5e-6)
FP32 = Tolerance(vision=_FP32_BOUND, embedding=Bound(1e-6), decoder=_FP32_BOUND, end_to_end=_FP32_BOUND, token_steps=16)
# against transformers in the same dtype (fp16 on CPU here; the two differ in summation order and
# in where they round, so a few fp16 ulps of the logits' scale)
FP16 = Tolerance(vision=Bound(2e-2, 4e-3), embedding=Bound(2e-3), decoder=Bound(2e-2, 4e-3), end_to_end=Bound(2e-2, 4e-3), token_steps=16)
# bf16 decoders; their vision/embedding graphs compute in fp32 and round features to bf16
BF16 = Tolerance(vision=Bound(5e-2, 8e-3), embedding=Bound(2e-2), decoder=Bound(1e-1, 2e-2), end_to_end=Bound(1e-1, 2e-2), token_steps=8)


# --------------------------------------------------------------------------- targets
@dataclasses.dataclass(frozen=True)
class Target:
    """One (precision, execution provider) pair this tool exports."""

    precision: str
    provider: str
    # the decoder's input/output dtype as og's builder writes it: the dtype of image_features
    # and inputs_embeds between the three graphs
    io_dtype: str
    # default dtype of the vision and embedding graphs' weights (--vision_precision overrides)
    vision_dtype: str
    # the decoder attention op og's builder must write; GroupQueryAttention shares og's KV
    # buffers between steps (past_present_share_buffer), MultiHeadAttention does not
    attention_op: str
    tolerance: Tolerance
    # -p int4: MatMulNBits accuracy_level when --int4_accuracy_level is not given (og's: 4 on CPU,
    # 0 = the provider's choice on CUDA); None for the float targets
    default_accuracy_level: int | None = None
    # -p int4 -e cpu: og's builder writes fp32 and our streaming quantizer makes og's int4 graph
    streaming_int4: bool = False
    # artifacts --validate can check on a CPU (the rest need this target's device)
    cpu_checkable: tuple[str, ...] = ARTIFACTS
    # the execution provider's options in genai_config's session_options, as (key, value) pairs
    provider_options: tuple[tuple[str, str], ...] = ()

    @property
    def quantized(self) -> bool:
        return self.default_accuracy_level is not None

    @property
    def past_present_share_buffer(self) -> bool:
        return self.attention_op == "GroupQueryAttention"

    @property
    def reference_dtype(self) -> str:
        """The dtype transformers runs in when this target is checked against it on a CPU: the
        decoder's compute dtype (bf16 graphs' vision and embedding compute in fp32)."""
        return "fp16" if self.io_dtype == "fp16" else "fp32"

    @property
    def flags(self) -> tuple[str, ...]:
        return ("-p", self.precision, "-e", self.provider)


@dataclasses.dataclass(frozen=True)
class Precision:
    name: str
    targets: dict[str, Target]
    # provider -> why that pair is refused
    refused: dict[str, str] = dataclasses.field(default_factory=dict)


_GQA, _MHA = "GroupQueryAttention", "MultiHeadAttention"
PRECISIONS: dict[str, Precision] = {
    p.name: p
    for p in (
        Precision(
            "fp32",
            {
                "cpu": Target("fp32", "cpu", "fp32", "fp32", _GQA, FP32),
                # og's builder would write its packed Attention op here, without a KV cache for
                # Qwen-VL models (an invalid graph); our builder class asks for MultiHeadAttention
                # onnxruntime's CUDA provider rounds fp32 matrix products to TF32 by default: logits
                # 2e-3..8e-3 off transformers fp32 on an H200 (16/16 tokens equal), 1e-4 is fp32's bound
                "cuda": Target("fp32", "cuda", "fp32", "fp32", _MHA, FP32, provider_options=(("use_tf32", "0"),)),
            },
        ),
        Precision(
            "int4",
            {
                # checked with accuracy_level 1 against transformers on the dequantized weights
                "cpu": Target("int4", "cpu", "fp32", "fp32", _GQA, FP32, default_accuracy_level=4, streaming_int4=True),
                "cuda": Target("int4", "cuda", "fp16", "fp16", _GQA, FP16, default_accuracy_level=0),
            },
        ),
        Precision(
            "fp16",
            {"cuda": Target("fp16", "cuda", "fp16", "fp16", _GQA, FP16)},
            refused={"cpu": "onnxruntime's CPU provider has no fp16 kernels for most of these graphs; use -p fp32 or -p int4 on CPU"},
        ),
        Precision(
            "bf16",
            {
                # vision runs in fp32 and hands bf16 features over: onnxruntime's CUDA provider
                # lacks bf16 kernels for Where, Sin/Cos, Floor, Clip, Conv
                "cuda": Target("bf16", "cuda", "bf16", "fp32", _GQA, BF16, cpu_checkable=("vision", "embedding")),
            },
            refused={"cpu": "onnxruntime's CPU provider has no bf16 kernels for most of these graphs; use -p fp32 or -p int4 on CPU"},
        ),
    )
}

TARGETS: tuple[Target, ...] = tuple(t for p in PRECISIONS.values() for t in p.targets.values())


def target(precision: str, provider: str) -> Target:
    """The record for ``-p precision -e provider``; ValueError with the reason or the choices."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is unknown; choose one of {', '.join(PRECISIONS)}")
    if provider not in EXECUTION_PROVIDERS:
        raise ValueError(f"execution provider {provider!r} is unknown; choose one of {', '.join(EXECUTION_PROVIDERS)}")
    record = PRECISIONS[precision]
    if provider in record.targets:
        return record.targets[provider]
    supported = ", ".join(f"-p {t.precision} -e {t.provider}" for t in TARGETS)
    reason = record.refused.get(provider, "not supported yet")
    raise ValueError(f"-p {precision} -e {provider} is not supported: {reason} (supported: {supported})")
