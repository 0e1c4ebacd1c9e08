"""The one degrade function: down-sample a face, then back up to the model size.

Three kernels, all antialiased when shrinking (the filter widens with the scale factor):
- `bicubic_aa`: PIL's antialiased BICUBIC (cubic convolution, a = -0.5): taps that fall outside
  the image are dropped and the rest renormalised, and low-resolution sizes are rounded
  (`round(n / s)`). The name predates `matlab`; its numbers are PIL's, not MATLAB's.
- `bilinear`: triangle filter, PIL's edge and size rules (PIL BILINEAR, as MAFER used).
- `matlab`: MATLAB `imresize(img, 1/s)` then `imresize(low, [h w])`, as FSR-FER made its faces:
  output size `ceil(n * (1/s))`, the same cubic widened by the nominal factor when shrinking,
  pixel centres `u = x/scale + 0.5 * (1 - 1/scale)`, out-of-range taps mirrored (symmetric
  padding) with the weights normalised to sum 1 before the mirroring, one 1-D pass per axis
  (the axis with the smaller scale first, rows on a tie), each pass rounded to uint8 half
  away from zero because MATLAB's `imresizemex` returns the input's class.
A scale is `"x4"` (divide each side by 4) or `"16px"` (short side becomes 16 px, an exact size).

One set of maths: separable resampling matrices (`resample_matrix`), applied with numpy (one
product per face, so a face gets the same bytes whatever batch it is in) for the
downsample stage and as batched torch matmuls for on-device degradation during training. Tests
keep the two within one grey level of each other, `bicubic_aa` within one of PIL, and check
`matlab` against hand-computed MATLAB numbers. The low-resolution intermediate is rounded to
uint8, because a real low-res face is one.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from mrfer.data.scales import check_kernel, low_size, parse_scale


def _cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def _triangle(x: np.ndarray) -> np.ndarray:
    return np.clip(1.0 - np.abs(x), 0.0, None)


FILTERS = {"bicubic_aa": (_cubic, 2.0), "bilinear": (_triangle, 1.0)}


def _matlab_matrix(n_in: int, n_out: int, scale: float) -> np.ndarray:
    """MATLAB imresize's `contributions` for its default cubic kernel, as a dense matrix."""
    width = 4.0
    if scale < 1:  # antialiasing: h(x) = scale * cubic(scale * x), over a kernel 1/scale wider
        width = width / scale
    x = np.arange(1, n_out + 1, dtype=np.float64)  # MATLAB's 1-based output pixels
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = left[:, None] + np.arange(math.ceil(width) + 2)  # 1-based input pixels, some outside
    distance = u[:, None] - taps
    weights = scale * _cubic(scale * distance) if scale < 1 else _cubic(distance)
    weights = weights / weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(n_in), np.arange(n_in)[::-1]])  # symmetric padding
    index = mirror[np.mod(taps.astype(np.int64) - 1, 2 * n_in)]
    matrix = np.zeros((n_out, n_in))
    np.add.at(matrix, (np.repeat(np.arange(n_out), taps.shape[1]), index.ravel()), weights.ravel())
    return matrix


def resample_matrix(n_in: int, n_out: int, kernel: str, scale: float | None = None) -> np.ndarray:
    """(n_out, n_in) float64 matrix resampling one axis.

    `bicubic_aa`/`bilinear`: PIL-style, antialiased, edge taps dropped and renormalised.
    `matlab`: MATLAB imresize; `scale` is the factor MATLAB was given (1/s for imresize(img, 1/s);
    None: n_out / n_in, as for imresize(img, [rows cols]))."""
    check_kernel(kernel)
    if kernel == "matlab":
        return _matlab_matrix(n_in, n_out, n_out / n_in if scale is None else scale)
    if scale is not None:
        raise ValueError(f"kernel {kernel!r} takes no scale: its filter follows n_in / n_out")
    fn, support = FILTERS[kernel]
    scale = n_in / n_out
    stretch = max(scale, 1.0)  # widen the filter when shrinking: this is the antialiasing
    centers = (np.arange(n_out) + 0.5) * scale
    taps = np.arange(n_in) + 0.5
    distance = (taps[None, :] - centers[:, None]) / stretch
    weights = np.where(np.abs(distance) < support, fn(distance), 0.0)
    return weights / weights.sum(axis=1, keepdims=True)


@functools.lru_cache(maxsize=64)
def _matrix(n_in: int, n_out: int, kernel: str, scale: float | None = None) -> np.ndarray:
    return resample_matrix(n_in, n_out, kernel, scale).astype(np.float32)


@functools.lru_cache(maxsize=64)
def _matrix64(n_in: int, n_out: int, scale: float) -> np.ndarray:
    """The `matlab` matrix in float64: MATLAB resizes in double."""
    return resample_matrix(n_in, n_out, "matlab", scale)


def _along(images: np.ndarray, matrix: np.ndarray, axis: int) -> np.ndarray:
    """Resample NHWC images along H (axis 0) or W (axis 1): `matrix @` that axis, one matrix
    product per face. One product over the whole batch would let BLAS pick its kernel, and so its
    summation order, by the batch size; per face, a face's bytes do not depend on the faces beside
    it, so any subset of faces degraded in any chunks gives the same bytes (on one BLAS build)."""
    if axis == 1:
        images = images.transpose(0, 2, 1, 3)  # (n, w, h, c): the axis to resample first
    n, rest = len(images), images.shape[2:]
    faces = np.ascontiguousarray(images).reshape(n, images.shape[1], math.prod(rest))   # n may be 0
    out = np.matmul(matrix, faces).reshape(n, len(matrix), *rest)   # a BLAS product per face
    return out if axis == 0 else out.transpose(0, 2, 1, 3)


def _apply(images: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Resample NHWC float images with per-axis matrices (rows first, each face on its own)."""
    return _along(_along(images, rows, 0), cols, 1)


def _matlab_scales(height: int, width: int, scale: str | None,
                   size: tuple[int, int]) -> tuple[float, float]:
    """The per-axis factors MATLAB resizes with: 1/s for imresize(img, 1/s), out/in for a size."""
    kind, value = parse_scale(scale) if scale is not None else ("side", 0.0)
    if kind == "factor":
        return 1.0 / value, 1.0 / value
    return size[0] / height, size[1] / width


def _round_uint8(x: np.ndarray) -> np.ndarray:
    """MATLAB's double -> uint8: nearest with halves away from zero, saturated. Below zero the
    clip gives 0 either way, so floor(x + 0.5) is enough."""
    return np.clip(np.floor(x + 0.5), 0, 255)


def _imresize(images: np.ndarray, size: tuple[int, int], scales: tuple[float, float]) -> np.ndarray:
    """MATLAB imresize of NHWC images: one pass per axis, smaller scale first, each rounded."""
    out = images.astype(np.float64)
    for axis in np.argsort(scales, kind="stable"):
        m = _matrix64(out.shape[1 + axis], size[axis], scales[axis])
        out = _round_uint8(_along(out, m, axis))
    return out.astype(np.uint8)


@threadpool_limits.wrap(limits=1)   # many small products: extra BLAS threads only contend (5-13x slower)
def degrade(images: np.ndarray, scale: str, kernel: str,
            out_size: tuple[int, int] | None = None) -> np.ndarray:
    """NHWC uint8 -> NHWC uint8: down to `scale`, rounded to uint8, back up to `out_size`."""
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"degrade expects NHWC uint8 images, got {images.dtype} {images.shape}")
    n, h, w, c = images.shape
    out_h, out_w = out_size or (h, w)
    lh, lw = low_size(h, w, scale, kernel)
    if kernel == "matlab":
        low = _imresize(images, (lh, lw), _matlab_scales(h, w, scale, (lh, lw)))
        return _imresize(low, (out_h, out_w), _matlab_scales(lh, lw, None, (out_h, out_w)))
    low = _apply(images.astype(np.float32), _matrix(h, lh, kernel), _matrix(w, lw, kernel))
    low = np.clip(np.rint(low), 0, 255)
    up = _apply(low, _matrix(lh, out_h, kernel), _matrix(lw, out_w, kernel))
    return np.clip(np.rint(up), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=64)
def _matrix_on(n_in: int, n_out: int, kernel: str, device: torch.device,
               scale: float | None = None) -> torch.Tensor:
    """`_matrix` as a tensor on `device`, copied there once rather than on every batch."""
    return torch.from_numpy(_matrix(n_in, n_out, kernel, scale)).to(device)


def _resample_torch(x: torch.Tensor, size: tuple[int, int], kernel: str) -> torch.Tensor:
    """NCHW float -> NCHW float at `size`: rows @ x @ cols^T, two batched matmuls.
    Always float32: under bf16 autocast the matmuls would be off by a grey level."""
    (h, w), (out_h, out_w) = x.shape[-2:], size
    rows, cols = _matrix_on(h, out_h, kernel, x.device), _matrix_on(w, out_w, kernel, x.device)
    with torch.autocast(device_type=x.device.type, enabled=False):
        return rows @ (x.float() @ cols.T)


def _imresize_torch(x: torch.Tensor, size: tuple[int, int], scales: tuple[float, float]) -> torch.Tensor:
    """`_imresize` on device (float32, NCHW): the same passes, order and rounding."""
    order = sorted(range(2), key=lambda axis: scales[axis])  # stable: rows first on a tie
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.float()
        for axis in order:
            n_in = x.shape[-2 + axis]
            m = _matrix_on(n_in, size[axis], "matlab", x.device, scales[axis])
            x = (m @ x if axis == 0 else x @ m.T).add_(0.5).floor_().clamp_(0, 255)  # as _round_uint8
    return x


def degrade_torch(images: torch.Tensor, scale: str, kernel: str,
                  out_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Batched on-device version: NCHW float in [0, 255] -> NCHW float in [0, 255].
    (`matlab` rounds every pass, the last included, as MATLAB's uint8 output is.)"""
    check_kernel(kernel)
    h, w = images.shape[-2:]
    lh, lw = low_size(h, w, scale, kernel)
    if kernel == "matlab":
        out_h, out_w = out_size or (h, w)
        low = _imresize_torch(images, (lh, lw), _matlab_scales(h, w, scale, (lh, lw)))
        return _imresize_torch(low, (out_h, out_w), _matlab_scales(lh, lw, None, (out_h, out_w)))
    low = _resample_torch(images, (lh, lw), kernel).round_().clamp_(0, 255)
    return _resample_torch(low, out_size or (h, w), kernel).clamp_(0, 255)


def degrade_mixed(images: torch.Tensor, scales: list[str | None], kernel: str) -> torch.Tensor:
    """Degrade each sample to its own scale (None = keep), one batched call per distinct scale."""
    out = images.float().clone()
    for scale in sorted({s for s in scales if s is not None}):
        idx = torch.tensor([i for i, s in enumerate(scales) if s == scale], device=images.device)
        out[idx] = degrade_torch(images[idx], scale, kernel)
    return out
