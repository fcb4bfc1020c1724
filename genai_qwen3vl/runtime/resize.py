"""Bit-exact numpy port of torchvision's uint8 antialiased resize on CPU.

Reproduces ``torchvision.transforms.v2.functional.resize(x, [h, w], BICUBIC | BILINEAR, antialias=True)``
for a ``torch.uint8`` tensor ``x`` of shape ``[T, 3, H, W]`` (what transformers' Qwen3-VL video
processor runs on decoded frames). torchvision hands uint8 straight to
``torch.nn.functional.interpolate``, whose CPU kernel (``UpSampleKernel.cpp`` with the PIL-SIMD
derived AVX2 code of ``UpSampleKernelAVXAntialias.h``, or its scalar fallback, which computes the
same integers) works like Pillow's resampler but with its own fixed-point details:

* separable: first the width pass (skipped when the width keeps its size), then the height pass
  (skipped likewise); the intermediate image is rounded and clamped to uint8;
* per output index ``i`` along an axis (in -> out, ``scale = in / out``):
  ``center = scale * (i + 0.5)``, ``support = r * max(scale, 1)`` (``r`` = 2 for cubic, 1 for
  linear), ``xmin = max(int(center - support + 0.5), 0)``,
  ``xsize = min(int(center + support + 0.5), in) - xmin``, taps
  ``f((xmin + j - center + 0.5) / max(scale, 1))`` with Keys' cubic (a = -0.5) or the triangle,
  normalized by their sequential double sum;
* taps become int16 ``trunc(tap * 2**p +- 0.5)`` (half away from zero), with a per-axis
  precision ``p``: the first ``p`` in 0..21 with ``int(0.5 + max_tap * 2**(p + 1)) >= 2**15``, else 22;
* each output is ``clamp((2**(p - 1) + sum(tap * pixel)) >> p, 0, 255)`` in int32.

Once the tables exist everything is integer arithmetic, so the order of summation does not
matter: the taps are applied as banded blocks of a dense [out, in] matrix with BLAS matmuls, in
float32 where every partial sum provably stays below 2**24 (upscales, bicubic downscales below
about 2x), otherwise in float64 (exact below 2**53), then floored by 2**p and clamped as in torch.

Checked bit for bit against torch 2.14.1 / torchvision 0.29.1 on an AVX512 x86 CPU, where torch
runs its AVX2 uint8 kernel (ATEN_CPU_CAPABILITY=avx2 gives the same speed and bytes; the scalar
fallback, ATEN_CPU_CAPABILITY=default, gives the same bytes for bicubic). Caveat, bilinear only:
where torch reports neither AVX2 nor AVX512 (and not on ARM), torchvision resizes uint8 bilinear
input in float32 and rounds instead, which this module does not reproduce; bicubic always takes
the uint8 kernel.
"""

from __future__ import annotations

import numpy as np

from ..errors import ImageError, InputError

_RADIUS = {"bicubic": 2, "bilinear": 1}
_CHUNK = 1 << 23  # input values per batch of frames (bounds the float buffers)


def _filter(x: np.ndarray, mode: str) -> np.ndarray:
    x = np.abs(x)
    if mode == "bilinear":
        return np.where(x < 1.0, 1.0 - x, 0.0)
    a = -0.5
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


class _Axis:
    """Integer taps of one axis (in -> out): dense [out, in] matrix, precision, per-block windows."""

    def __init__(self, size_in: int, size_out: int, mode: str) -> None:
        scale = size_in / size_out
        support = _RADIUS[mode] * scale if scale >= 1.0 else float(_RADIUS[mode])
        invscale = 1.0 / scale if scale >= 1.0 else 1.0
        kmax = int(np.ceil(support)) * 2 + 1
        center = scale * (np.arange(size_out, dtype=np.float64) + 0.5)
        xmin = np.maximum(np.trunc(center - support + 0.5).astype(np.int64), 0)
        xend = np.minimum(np.trunc(center + support + 0.5).astype(np.int64), size_in)
        xsize = np.clip(xend - xmin, 0, kmax)
        j = np.arange(kmax)
        valid = j[None, :] < xsize[:, None]
        x = ((xmin[:, None] + j[None, :]) - center[:, None] + 0.5) * invscale
        taps = np.where(valid, _filter(x, mode), 0.0)
        total = np.zeros(size_out)
        for k in range(kmax):  # sequential double sum, as in the C++ loop
            total = total + taps[:, k]
        nonzero = total != 0.0
        taps[nonzero] /= total[nonzero, None]
        wmax = max(float(taps.max()), 0.0)
        prec = 0
        while prec < 22 and int(0.5 + wmax * float(1 << (prec + 1))) < (1 << 15):
            prec += 1
        scaled = taps * float(1 << prec)
        ints = np.trunc(np.where(scaled < 0.0, scaled - 0.5, scaled + 0.5))  # half away from zero
        self.prec = prec
        self.dense = np.zeros((size_out, size_in))
        rows = np.broadcast_to(np.arange(size_out)[:, None], valid.shape)
        self.dense[rows[valid], (xmin[:, None] + j)[valid]] = ints[valid]
        # float32 sums are exact while every partial sum stays below 2**24
        bound = 255.0 * np.abs(ints).sum(axis=1).max(initial=0.0) + float(1 << (prec - 1))
        self.dtype = np.float32 if bound < float(1 << 24) else np.float64
        # blocks of consecutive outputs and the input window they read (xmin, xmin + xsize rise with i)
        step = max(8, int(96 / max(scale, 1.0)))
        self.blocks = [
            (o, min(o + step, size_out), int(xmin[o]), int((xmin + xsize)[o : o + step].max())) for o in range(0, size_out, step)
        ]

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Resample uint8 ``x`` [N, size_in, R] along axis 1; returns uint8 [N, size_out, R]."""
        src = x.astype(self.dtype)
        acc = np.empty((x.shape[0], self.dense.shape[0], x.shape[2]), self.dtype)
        dense = self.dense.astype(self.dtype)
        for o0, o1, c0, c1 in self.blocks:
            np.matmul(dense[o0:o1, c0:c1], src[:, c0:c1], out=acc[:, o0:o1])
        acc += self.dtype(1 << (self.prec - 1))
        acc *= self.dtype(1.0 / (1 << self.prec))  # exact: power of two
        np.floor(acc, out=acc)  # == arithmetic >> prec
        np.clip(acc, 0, 255, out=acc)
        return acc.astype(np.uint8)


def torch_like_resize(frames: np.ndarray, height: int, width: int, mode: str = "bicubic") -> np.ndarray:
    """uint8 [T, H, W, C] -> uint8 [T, height, width, C], equal to torchvision's antialiased resize."""
    if mode not in _RADIUS:
        raise InputError(f"mode must be one of {sorted(_RADIUS)}, got {mode!r}")
    if frames.dtype != np.uint8 or frames.ndim != 4 or min(height, width) < 1:
        raise ImageError(f"expected uint8 [T, H, W, C] frames and a positive size, got {frames.dtype} {frames.shape}")
    t_all, h_in, w_in, c = frames.shape
    along_w = _Axis(w_in, width, mode) if width != w_in else None
    along_h = _Axis(h_in, height, mode) if height != h_in else None
    out = np.empty((t_all, height, width, c), np.uint8)
    chunk = max(1, _CHUNK // max(1, h_in * w_in * c))
    for t0 in range(0, t_all, chunk):
        y = frames[t0 : t0 + chunk]
        t = y.shape[0]
        if along_w is not None:  # width first, like torch; the data goes [W, T*H*C] for one big matmul
            y = along_w.apply(y.transpose(2, 0, 1, 3).reshape(1, w_in, -1))
            y = y.reshape(width, t, h_in, c).transpose(1, 2, 0, 3)
        if along_h is not None:
            y = along_h.apply(np.ascontiguousarray(y).reshape(t, h_in, -1))
        out[t0 : t0 + t] = y.reshape(t, height, width, c)
    return out
