"""On-device batch transforms: augmentation and normalisation (degradation: mrfer.data.degrade).

Batches arrive as uint8 NHWC on the device (GPU when there is one); everything here is a few
tensor ops per batch, never a Python loop over images. Training and inference share `prepare`,
so a face is normalised the same way in both.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pydantic import Field

from mrfer.config import Section
from mrfer.errors import InputError

class Augment(Section):
    """On-device training augmentation, one batched op per step. Keep it mild: expression cues
    live in a few pixels (lid, lip corner), and every warp is a bilinear resample that softens them."""

    flip: bool = Field(description="random horizontal flip")
    rotate: float = Field(ge=0, le=45, description="max rotation, degrees")
    scale: float = Field(ge=0, lt=1, description="max zoom in or out, a fraction")
    translate: float = Field(ge=0, lt=0.5, description="max shift, a fraction of the side")
    brightness: float = Field(ge=0, le=1, description="max brightness offset, a fraction of 255")
    contrast: float = Field(ge=0, lt=1, description="max contrast change, a fraction")


def to_float(batch: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> contiguous float NCHW in [0, 255] (the warp and resize kernels are faster on it)."""
    return batch.permute(0, 3, 1, 2).float().contiguous()


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(x - mean) / std as one fused pass (each full-batch temporary costs a fresh allocation)."""
    return torch.addcmul(-mean / std, x, 1 / std)


def stats_tensors(mean: list[float], std: list[float] | None, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, C, 1, 1) mean and std in 0..255 units; std None means centre only (MAFER)."""
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std if std is not None else [1.0] * len(mean), dtype=torch.float32, device=device)
    return m, s.clamp_min(1e-3).view(1, -1, 1, 1)


def uniform(n: int, span: float, gen: torch.Generator, device) -> torch.Tensor:
    return (torch.rand(n, generator=gen, device=device) * 2 - 1) * span


def affine_grid(theta: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`F.affine_grid(theta, ..., align_corners=False)` by broadcasting: its batched matmul over a
    (N, H*W, 3) base grid was the slowest op of the whole preset on CPU."""
    h, w = size
    xs = ((torch.arange(w, device=theta.device) + 0.5) * (2 / w) - 1).view(1, 1, w)
    ys = ((torch.arange(h, device=theta.device) + 0.5) * (2 / h) - 1).view(1, h, 1)
    t = theta.view(-1, 6, 1, 1)
    return torch.stack([t[:, 0] * xs + t[:, 1] * ys + t[:, 2], t[:, 3] * xs + t[:, 4] * ys + t[:, 5]], -1)


def augment(batch: torch.Tensor, cfg: Augment, gen: torch.Generator) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [0, 255]: brightness and contrast, then random flip, rotation,
    scale and translation as one affine warp.

    The photometric step is per-sample affine, so it is applied first, fused with the uint8 ->
    float conversion (one pass over the batch), and the contrast pivot is the mean of the uint8
    face; a bilinear warp with border padding commutes with it."""
    n, device = batch.shape[0], batch.device
    contrast = 1 + uniform(n, cfg.contrast, gen, device).view(n, 1, 1, 1)
    brightness = uniform(n, cfg.brightness * 255, gen, device).view(n, 1, 1, 1)
    face_mean = batch.reshape(n, -1).sum(1, dtype=torch.float32).view(n, 1, 1, 1) / batch[0].numel()
    x = torch.addcmul(face_mean * (1 - contrast) + brightness, batch.permute(0, 3, 1, 2), contrast)
    x.clamp_(0, 255)
    angle = uniform(n, math.radians(cfg.rotate), gen, device)
    scale = 1 + uniform(n, cfg.scale, gen, device)
    flip = torch.where(torch.rand(n, generator=gen, device=device) < 0.5, -1.0, 1.0) if cfg.flip \
        else torch.ones(n, device=device)
    shift = torch.stack([uniform(n, 2 * cfg.translate, gen, device) for _ in range(2)], 1)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, shift[:, 0]], 1),
                         torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1)
    return F.grid_sample(x, affine_grid(theta, x.shape[-2:]), mode="bilinear", padding_mode="border",
                         align_corners=False)


def random_scales(n: int, scales: list[str], p: float, gen: torch.Generator) -> list[str | None]:
    """Per sample: None (keep full resolution) or a scale drawn uniformly, with probability p."""
    degrade_it = (torch.rand(n, generator=gen, device=gen.device) < p).tolist()
    pick = torch.randint(len(scales), (n,), generator=gen, device=gen.device).tolist()
    return [scales[k] if d else None for d, k in zip(degrade_it, pick)]


def prepare(batch: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """The inference preprocessing path: uint8 NHWC -> normalised float NCHW (training adds its
    augmentation and degradation between the two steps: `mrfer.train.losses`)."""
    return normalize(to_float(batch), mean, std)


def norm_stats(normalize: str, mean: list[float] | None, std: list[float] | None,
               stats: dict) -> tuple[list[float], list[float] | None]:
    """(mean, std) in 0..255 units. A published mean/std (params) overrides the measured one;
    `normalize: mean` centres only, as MAFER did."""
    mean = [float(v) for v in (mean or stats["mean"])]
    std = [float(v) for v in (std or stats["std"])] if normalize == "mean_std" else None
    if len(mean) != stats["channels"]:
        raise InputError(f"mean has {len(mean)} values but the data has {stats['channels']} channels")
    return mean, std
