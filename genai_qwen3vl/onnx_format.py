"""The ONNX format as the export writes it and the checks read it: external data, attributes,
dtype names, the onnxruntime contrib ops we emit, and the block-quantized weight codec in both
directions.

A neutral layer under ``export`` (which writes graphs) and ``verify`` (which reads them back):
it imports onnx and numpy only, never torch, onnxruntime-genai or another tier of this package,
so that what a quantized weight *is* on disk is written down once. ``tests/test_onnx_format.py``
round-trips the codec.

The block layout (``MatMulNBits``, ``GatherBlockQuantized``, ``QMoE``): a weight of N rows and K
columns is cut along K into blocks of ``block`` values (K padded with zeros to whole blocks); each
block stores ``bits``-bit codes q in 0..2^bits-1, one float scale and one zero point (implicit
2^(bits-1) when symmetric), and a value is (q - zero point) * scale::

    rows [N, K] float32  --quantize_blocks-->  q uint8 [N, K/block, block], scales [N, K/block], zero points | None
                                                  |
                                               pack_bits (4 bits: two codes a byte, low nibble first)
                                                  v
                                               data uint8 [N, K/block, block*bits/8]  --dequantize_blocks-->  [N, K] float32
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

# --------------------------------------------------------------------------- op names
MS_DOMAIN = "com.microsoft"  # onnxruntime's contrib ops
MATMUL_NBITS = "MatMulNBits"
GATHER_BLOCK_QUANTIZED = "GatherBlockQuantized"
MOE = "MoE"
QMOE = "QMoE"
ACCURACY_LEVEL = "accuracy_level"  # the attribute MatMulNBits and QMoE take for their activation precision


def quant_suffix(bits: int) -> str:
    """What og appends to a quantized weight's and node's names (``..._Q4``, ``..._Q8``)."""
    return f"_Q{bits}"


def float_name(quantized: str) -> str:
    """The float weight's name of a quantized one (``quant_suffix`` taken off)."""
    return quantized.rsplit("_Q", 1)[0]


# --------------------------------------------------------------------------- dtypes
ONNX_TO_NAME = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.BFLOAT16: "bfloat16",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
}


def numpy_dtype(data_type: int) -> np.dtype:
    """numpy's dtype for an ONNX tensor element type."""
    return helper.tensor_dtype_to_np_dtype(data_type)


# --------------------------------------------------------------------------- attributes
def int_attributes(node: onnx.NodeProto) -> dict[str, int]:
    """A node's integer attributes by name."""
    return {a.name: a.i for a in node.attribute if a.type == onnx.AttributeProto.INT}


def set_int_attribute(node: onnx.NodeProto, name: str, value: int) -> None:
    """Set (or add) an integer attribute of ``node``."""
    for attr in node.attribute:
        if attr.name == name:
            attr.i = value
            return
    node.attribute.append(helper.make_attribute(name, value))


# --------------------------------------------------------------------------- external data
ALIGN = 64  # offsets of tensors in an external data file are multiples of this


def new_tensor(name: str, data_type: int, shape) -> onnx.TensorProto:
    """An empty initializer (no data yet) of this name, element type and shape."""
    tensor = onnx.TensorProto()
    tensor.name = name
    tensor.data_type = data_type
    tensor.dims.extend(int(d) for d in shape)
    return tensor


def external_info(tensor: onnx.TensorProto) -> dict[str, str]:
    """An initializer's external data entries (location, offset, length)."""
    return {e.key: e.value for e in tensor.external_data}


class DataWriter:
    """Appends tensors to an external data file and points initializers at them."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.file = open(self.path, "wb")
        self.offset = 0

    def write(self, tensor: onnx.TensorProto, payload) -> None:
        pad = -self.offset % ALIGN
        if pad:
            self.file.write(b"\0" * pad)
            self.offset += pad
        view = memoryview(payload).cast("B")
        self.file.write(view)
        del tensor.external_data[:]
        tensor.ClearField("raw_data")
        tensor.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", self.path.name), ("offset", str(self.offset)), ("length", str(view.nbytes))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        self.offset += view.nbytes

    def close(self) -> None:
        self.file.close()


def read_payload(tensor: onnx.TensorProto, folder: Path, files: dict) -> bytes:
    """The raw bytes of an initializer, inline or read from its external file (read, not
    memory-mapped: mapped pages would stay resident and count against the process). ``files``
    caches the open handles by location; the caller closes them."""
    if tensor.data_location != onnx.TensorProto.EXTERNAL:
        return numpy_helper.to_array(tensor).tobytes()
    info = external_info(tensor)
    location = info["location"]
    if location not in files:
        files[location] = open(Path(folder) / location, "rb")
    handle = files[location]
    handle.seek(int(info.get("offset", 0)))
    length = int(info["length"])
    data = handle.read(length)
    if len(data) != length:
        raise ValueError(f"{Path(folder) / location} is shorter than its initializer {tensor.name} needs")
    return data


def read_initializers(model: onnx.ModelProto, folder: Path, names) -> dict[str, np.ndarray]:
    """The named initializers of a graph loaded without its external data, as arrays, read from
    the files beside it (without onnx's loader, which refuses weights files with several hard
    links, as a validation copy of a folder has)."""
    inits = {t.name: t for t in model.graph.initializer}
    files: dict = {}
    try:
        arrays = {}
        for name in names:
            tensor = inits[name]
            payload = read_payload(tensor, Path(folder), files)
            arrays[name] = np.frombuffer(payload, dtype=numpy_dtype(tensor.data_type)).reshape(tuple(tensor.dims))
        return arrays
    finally:
        for handle in files.values():
            handle.close()


# --------------------------------------------------------------------------- block codec
_ROWS = 512  # rows quantized at a time: bounds the temporaries to a few of these slices


def quantize_blocks(w: np.ndarray, bits: int, block: int, symmetric: bool):
    """Quantize the rows of ``w`` [N, K] (float32) block-wise along K as ``MatMulNBits`` and
    ``GatherBlockQuantized`` read them: returns (q uint8 [N, K/block, block] in 0..2^bits-1,
    scales float32 [N, K/block], zero points uint8 [N, K/block] or None when symmetric, whose
    implicit zero point is 2^(bits-1)). K is padded with zeros to whole blocks. A weight
    dequantizes to (q - zero point) * scale; a symmetric block's value of largest magnitude
    maps to 0 (onnxruntime's convention), an asymmetric block spans [min(w, 0), max(w, 0)]."""
    n, k = w.shape
    blocks = -(-k // block)
    qmax, mid = float(2**bits - 1), float(2 ** (bits - 1))
    q = np.empty((n, blocks, block), dtype=np.uint8)
    scales = np.empty((n, blocks), dtype=np.float32)
    zeros = None if symmetric else np.empty((n, blocks), dtype=np.uint8)
    for r in range(0, n, _ROWS):
        b = np.zeros((min(_ROWS, n - r), blocks * block), dtype=np.float32)
        b[:, :k] = w[r : r + _ROWS]
        b = b.reshape(b.shape[0], blocks, block)
        if symmetric:
            s = np.take_along_axis(b, np.abs(b).argmax(-1)[..., None], -1) / -mid
            z = np.full_like(s, mid)
        else:
            lo = np.minimum(b.min(-1, keepdims=True), 0.0)
            s = (np.maximum(b.max(-1, keepdims=True), 0.0) - lo) / qmax
            z = np.clip(np.rint(-lo / np.where(s == 0, 1, s)), 0, qmax)
        inv = np.divide(1.0, s, out=np.zeros_like(s), where=s != 0)
        q[r : r + _ROWS] = np.clip(np.rint(b * inv) + z, 0, qmax)
        scales[r : r + _ROWS] = s[..., 0]
        if zeros is not None:
            zeros[r : r + _ROWS] = z[..., 0]
    return q, scales, zeros


def pack_bits(q: np.ndarray, bits: int) -> np.ndarray:
    """Values of ``bits`` bits (4 or 8) along the last axis packed into bytes, low bits first
    (4 bits: an even count of values)."""
    if bits == 8:
        return q
    if bits != 4:
        raise ValueError(f"{bits}-bit values are not packed here (4 or 8)")
    return (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)


def unpack_bits(packed: np.ndarray, bits: int) -> np.ndarray:
    """``pack_bits`` undone: the ``bits``-bit values along the last axis, one a byte."""
    if bits == 8:
        return packed
    if bits != 4:
        raise ValueError(f"{bits}-bit values are not unpacked here (4 or 8)")
    return np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(*packed.shape[:-1], -1)


def pack_zero_points(zeros: np.ndarray, bits: int) -> np.ndarray:
    """Zero points [N, K/block] as ``MatMulNBits`` reads them: 4-bit ones two a byte along the
    blocks (an odd count padded), [N, ceil(K/block * bits / 8)]."""
    if bits == 4:
        return pack_bits(np.pad(zeros, ((0, 0), (0, zeros.shape[-1] % 2))), 4)
    return zeros


def dequantize_blocks(
    packed: np.ndarray, scales: np.ndarray, block: int, k: int, bits: int = 4, zero_points: np.ndarray | None = None
) -> np.ndarray:
    """Block-wise weights as MatMulNBits, GatherBlockQuantized and QMoE store them: values of
    ``bits`` bits packed along the last axis (low bits first), one scale per ``block`` values and
    a zero point per block (``zero_points``, 4-bit ones packed two per byte; default
    2^(bits-1)); returns float32 [..., k] (the blocks' padding past ``k`` cut off)."""
    q = unpack_bits(packed, bits)
    blocks = scales.shape[-1]
    if zero_points is None:
        zero = np.float32(2 ** (bits - 1))
    else:
        zero_points = unpack_bits(zero_points, bits)
        zero = np.repeat(zero_points[..., :blocks].astype(np.float32), block, axis=-1)
    q = q.reshape(*scales.shape[:-1], -1).astype(np.float32)
    if zero_points is not None:
        zero = zero[..., : q.shape[-1]]
    w = (q - zero) * np.repeat(scales.astype(np.float32), block, axis=-1)[..., : q.shape[-1]]
    return w[..., :k]
