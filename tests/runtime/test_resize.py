"""torch_like_resize against the real torchvision call, byte for byte (np.array_equal)."""

from __future__ import annotations

import numpy as np
import pytest

from genai_qwen3vl.runtime.resize import torch_like_resize

CONTENTS = ("noise", "saturated", "gradient")


def _torchvision(frames: np.ndarray, height: int, width: int, mode: str) -> np.ndarray:
    import torch
    import torchvision.transforms.v2.functional as tvF

    interpolation = {"bicubic": tvF.InterpolationMode.BICUBIC, "bilinear": tvF.InterpolationMode.BILINEAR}[mode]
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).contiguous()  # [T, 3, H, W]
    y = tvF.resize(x, [height, width], interpolation=interpolation, antialias=True)
    return y.permute(0, 2, 3, 1).numpy()


def _native_uint8(mode: str) -> bool:
    """torchvision resizes uint8 bilinear in float32 on CPUs without AVX2 (bicubic never)."""
    if mode == "bicubic":
        return True
    from torchvision.transforms.v2.functional import InterpolationMode
    from torchvision.transforms.v2.functional._geometry import _do_native_uint8_resize_on_cpu

    return _do_native_uint8_resize_on_cpu(InterpolationMode.BILINEAR)


def _frames(content: str, t: int, h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if content == "noise":
        return rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8)
    if content == "saturated":  # 0/255 pixels, blocks and thin lines: overshoot that must be clamped
        x = (rng.random((t, h, w, 3)) < 0.5).astype(np.uint8) * 255
        x[:, : h // 2, : w // 2] = 255
        x[:, h // 2 :, w // 2 :] = 0
        x[:, ::3, :, 1] = 0
        x[:, :, ::4, 2] = 255
        return x
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([255 * xx / max(w - 1, 1), 255 * yy / max(h - 1, 1), 127.5 + 127.5 * np.sin(xx / 7 + yy / 11)], -1)
    shift = np.arange(t, dtype=np.float64)[:, None, None, None] * 9
    return np.clip(np.round(base[None] + shift) % 256, 0, 255).astype(np.uint8)


def _check(frames: np.ndarray, height: int, width: int, mode: str) -> None:
    if not _native_uint8(mode):
        pytest.skip("torchvision does not use torch's uint8 bilinear kernel on this CPU")
    before = frames.copy()
    got = torch_like_resize(frames, height, width, mode)
    want = _torchvision(frames, height, width, mode)
    assert np.array_equal(frames, before)
    assert got.dtype == np.uint8 and got.shape == want.shape == (frames.shape[0], height, width, 3)
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    assert np.array_equal(got, want), f"max |diff| {diff.max()} at {np.argwhere(diff)[:5].tolist()}"


def _random_cases(seed: int, count: int, lo: int, hi: int) -> list[tuple[int, int, int, int, int]]:
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(count):
        h_in, w_in, h_out, w_out = (int(v) for v in rng.integers(lo, hi + 1, 4))
        if rng.random() < 0.2:
            h_out = h_in
        elif rng.random() < 0.2:
            w_out = w_in
        if (h_out, w_out) == (1, 1):  # see test_one_by_one_output
            w_out = 2
        cases.append((int(rng.integers(1, 4)), h_in, w_in, h_out, w_out))
    return cases


# (T, H_in, W_in, H_out, W_out)
NAMED = [
    (1, 720, 1280, 448, 800),  # the Qwen3-VL video case
    (3, 480, 640, 448, 608),  # mild downscale
    (2, 100, 60, 300, 200),  # upscale both
    (2, 90, 160, 192, 96),  # up in height, down in width
    (2, 160, 90, 96, 192),  # down in height, up in width
    (2, 64, 80, 64, 33),  # height kept
    (2, 77, 64, 31, 64),  # width kept
    (1, 1000, 1000, 37, 37),  # large factor down
    (2, 1000, 37, 37, 1000),  # large factor down and up
    (1, 37, 1000, 1000, 37),
    (2, 333, 517, 101, 999),  # odd sizes
    (1, 1, 1, 7, 5),  # tiny
    (2, 8, 8, 1, 2),
    (2, 1, 8, 1, 1),
    (2, 3, 5, 8, 2),
    (1, 1, 9, 1, 4),
    (2, 7, 1, 3, 1),
    (1, 1080, 1920, 448, 800),  # float64 accumulation
    (4, 720, 1280, 448, 800),  # several frame chunks
    (1, 2, 2, 1000, 3),
    (1, 449, 801, 448, 800),  # by one pixel
]


@pytest.mark.parametrize("content", CONTENTS)
@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
@pytest.mark.parametrize("case", NAMED, ids=lambda c: "T{}_{}x{}_to_{}x{}".format(*c))
def test_named_sizes(case, mode, content):
    t, h_in, w_in, h_out, w_out = case
    _check(_frames(content, t, h_in, w_in, seed=sum(case)), h_out, w_out, mode)


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
@pytest.mark.parametrize("content", CONTENTS)
def test_random_sizes(mode, content):
    for i, (t, h_in, w_in, h_out, w_out) in enumerate(_random_cases(1234, 40, 1, 200)):
        _check(_frames(content, t, h_in, w_in, seed=i), h_out, w_out, mode)


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
@pytest.mark.parametrize("content", CONTENTS)
def test_tiny_sizes(mode, content):
    for i, (t, h_in, w_in, h_out, w_out) in enumerate(_random_cases(99, 60, 1, 8)):
        _check(_frames(content, t, h_in, w_in, seed=i), h_out, w_out, mode)


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
def test_every_small_axis_pair(mode):
    """Each in -> out pair up to 12 px, once along the width and once along the height."""
    for n_in in range(1, 13):
        frames = _frames("saturated", 2, n_in, n_in, seed=n_in)
        for n_out in range(1, 13):
            _check(frames, n_in, n_out, mode)
            _check(frames, n_out, n_in, mode)


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
def test_axis_sweep(mode):
    """Many scale factors along one axis (the other kept), up and down, noise and saturated rows."""
    rng = np.random.default_rng(7)
    for n_in in (13, 29, 64, 97, 128, 255, 448, 720, 1280):
        outs = {1, 2, 3, n_in - 1, n_in + 1, n_in // 2, n_in // 3, 2 * n_in, 37} | set(rng.integers(1, 2 * n_in, 6).tolist())
        frames = _frames("noise", 1, 4, n_in, seed=n_in)
        frames[:, 2:] = _frames("saturated", 1, 2, n_in, seed=n_in)
        for n_out in sorted(o for o in outs if o >= 1 and o != n_in):
            _check(frames, 4, n_out, mode)
            _check(frames.transpose(0, 2, 1, 3), n_out, 4, mode)


ONE_BY_ONE = [(1, 8, 8), (2, 8, 1), (3, 5, 5), (1, 1000, 37), (2, 2, 2), (1, 720, 1280)]

_SCALAR_KERNEL = """
import sys, numpy as np, torch, torch.nn.functional as F
data = np.load(sys.argv[1])
out = {}
for key in data.files:
    for mode in ("bicubic", "bilinear"):
        x = torch.from_numpy(data[key]).permute(0, 3, 1, 2).contiguous()
        y = F.interpolate(x, size=[1, 1], mode=mode, align_corners=False, antialias=True)
        out[key + mode] = y.permute(0, 2, 3, 1).numpy()
np.savez(sys.argv[2], **out)
"""


def test_one_by_one_output(tmp_path):
    """torch's AVX2 uint8 kernel fails an internal assert (UpSampleKernelAVXAntialias.h,
    ``num_channels == unpacked_output.size(0)``) when the output is 1x1 and the height changes:
    the [T, 3, 1, 1] output is ambiguously channels-last. Compare those cases with torch's scalar
    uint8 kernel instead (same integer arithmetic), run in a child with ATEN_CPU_CAPABILITY=default
    and calling interpolate directly (torchvision would switch bilinear to float32 there)."""
    import os
    import subprocess
    import sys

    inputs = {f"c{i}": _frames("noise", t, h, w, seed=i) for i, (t, h, w) in enumerate(ONE_BY_ONE)}
    np.savez(tmp_path / "in.npz", **inputs)
    script = tmp_path / "scalar_kernel.py"
    script.write_text(_SCALAR_KERNEL)
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default")
    subprocess.run([sys.executable, str(script), str(tmp_path / "in.npz"), str(tmp_path / "out.npz")], env=env, check=True)
    want = np.load(tmp_path / "out.npz")
    for key, frames in inputs.items():
        for mode in ("bicubic", "bilinear"):
            assert np.array_equal(torch_like_resize(frames, 1, 1, mode), want[key + mode]), (key, mode)


def test_same_size_is_a_copy():
    frames = _frames("noise", 2, 9, 11, seed=0)
    out = torch_like_resize(frames, 9, 11)
    assert np.array_equal(out, frames) and out is not frames
    _check(frames, 9, 11, "bicubic")


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        torch_like_resize(np.zeros((1, 4, 4, 3), np.float32), 2, 2)
    with pytest.raises(ValueError):
        torch_like_resize(np.zeros((1, 4, 4, 3), np.uint8), 2, 2, mode="lanczos")
