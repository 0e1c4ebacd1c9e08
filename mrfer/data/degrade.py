"""The one degrade function: down-sample a face, then back up to the model size.

Two kernels, both antialiased when shrinking (the filter widens with the scale factor):
- `bicubic_aa`: cubic convolution, a = -0.5 (MATLAB `imresize`, as FSR-FER used; PIL BICUBIC);
- `bilinear`: triangle filter (PIL BILINEAR, as MAFER used).
A scale is `"x4"` (divide each side by 4) or `"16px"` (short side becomes 16 px).

One set of maths: separable resampling matrices (`resample_matrix`, PIL's antialiased filters),
applied with numpy for the downsample stage and as batched torch matmuls for on-device
degradation during training. Tests keep the two within one grey level of each other and of PIL.
The low-resolution intermediate is rounded to uint8, because a real low-res face is one.
"""
from __future__ import annotations

import functools
import re
from typing import Annotated

import numpy as np
import torch
from pydantic import AfterValidator

KERNELS = ("bicubic_aa", "bilinear")
SCALE_RE = re.compile(r"^(?:x(\d+(?:\.\d+)?)|(\d+)px)$")


def parse_scale(scale: str) -> tuple[str, float]:
    """`"x4"` -> ("factor", 4.0); `"16px"` -> ("side", 16.0). ValueError on anything else."""
    match = SCALE_RE.match(str(scale).strip())
    if not match:
        raise ValueError(f"bad scale {scale!r}: use 'x<factor>' (e.g. x4) or '<n>px' (e.g. 16px)")
    if match.group(1):
        factor = float(match.group(1))
        if factor < 1:
            raise ValueError(f"bad scale {scale!r}: factor must be >= 1")
        return "factor", factor
    return "side", float(match.group(2))


def _check_scale(scale: str) -> str:
    parse_scale(scale)
    return scale


# A params value that is a scale: x<factor> or <n>px, checked when params are read.
Scale = Annotated[str, AfterValidator(_check_scale)]


def low_size(height: int, width: int, scale: str) -> tuple[int, int]:
    """(h, w) of the low-resolution image for a scale."""
    kind, value = parse_scale(scale)
    if kind == "factor":
        return max(1, round(height / value)), max(1, round(width / value))
    short = min(height, width)
    return max(1, round(height * value / short)), max(1, round(width * value / short))


def _cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def _triangle(x: np.ndarray) -> np.ndarray:
    return np.clip(1.0 - np.abs(x), 0.0, None)


FILTERS = {"bicubic_aa": (_cubic, 2.0), "bilinear": (_triangle, 1.0)}


def resample_matrix(n_in: int, n_out: int, kernel: str) -> np.ndarray:
    """(n_out, n_in) matrix resampling one axis, PIL-style: antialiased, edge-normalised."""
    if kernel not in FILTERS:
        raise ValueError(f"unknown kernel {kernel!r}; expected one of {KERNELS}")
    fn, support = FILTERS[kernel]
    scale = n_in / n_out
    stretch = max(scale, 1.0)  # widen the filter when shrinking: this is the antialiasing
    centers = (np.arange(n_out) + 0.5) * scale
    taps = np.arange(n_in) + 0.5
    distance = (taps[None, :] - centers[:, None]) / stretch
    weights = np.where(np.abs(distance) < support, fn(distance), 0.0)
    return weights / weights.sum(axis=1, keepdims=True)


@functools.lru_cache(maxsize=64)
def _matrix(n_in: int, n_out: int, kernel: str) -> np.ndarray:
    return resample_matrix(n_in, n_out, kernel).astype(np.float32)


def _apply(images: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Resample NHWC float images with per-axis matrices."""
    return np.einsum("oh,nhwc,pw->nopc", rows, images, cols, optimize=True)


def degrade(images: np.ndarray, scale: str, kernel: str = "bicubic_aa",
            out_size: tuple[int, int] | None = None) -> np.ndarray:
    """NHWC uint8 -> NHWC uint8: down to `scale`, rounded to uint8, back up to `out_size`."""
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"degrade expects NHWC uint8 images, got {images.dtype} {images.shape}")
    n, h, w, c = images.shape
    out_h, out_w = out_size or (h, w)
    lh, lw = low_size(h, w, scale)
    low = _apply(images.astype(np.float32), _matrix(h, lh, kernel), _matrix(w, lw, kernel))
    low = np.clip(np.rint(low), 0, 255)
    up = _apply(low, _matrix(lh, out_h, kernel), _matrix(lw, out_w, kernel))
    return np.clip(np.rint(up), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=64)
def _matrix_on(n_in: int, n_out: int, kernel: str, device: torch.device) -> torch.Tensor:
    """`_matrix` as a tensor on `device`, copied there once rather than on every batch."""
    return torch.from_numpy(_matrix(n_in, n_out, kernel)).to(device)


def _resample_torch(x: torch.Tensor, size: tuple[int, int], kernel: str) -> torch.Tensor:
    """NCHW float -> NCHW float at `size`: rows @ x @ cols^T, two batched matmuls.
    Always float32: under bf16 autocast the matmuls would be off by a grey level."""
    (h, w), (out_h, out_w) = x.shape[-2:], size
    rows, cols = _matrix_on(h, out_h, kernel, x.device), _matrix_on(w, out_w, kernel, x.device)
    with torch.autocast(device_type=x.device.type, enabled=False):
        return rows @ (x.float() @ cols.T)


def degrade_torch(images: torch.Tensor, scale: str, kernel: str = "bicubic_aa",
                  out_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Batched on-device version: NCHW float in [0, 255] -> NCHW float in [0, 255]."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; expected one of {KERNELS}")
    h, w = images.shape[-2:]
    low = _resample_torch(images, low_size(h, w, scale), kernel).round_().clamp_(0, 255)
    return _resample_torch(low, out_size or (h, w), kernel).clamp_(0, 255)


def degrade_mixed(images: torch.Tensor, scales: list[str | None], kernel: str = "bicubic_aa") -> torch.Tensor:
    """Degrade each sample to its own scale (None = keep), one batched call per distinct scale."""
    out = images.float().clone()
    for scale in sorted({s for s in scales if s is not None}):
        idx = torch.tensor([i for i, s in enumerate(scales) if s == scale], device=images.device)
        out[idx] = degrade_torch(images[idx], scale, kernel)
    return out
