"""The training loss the recipes share: on-device augmentation, optional multi-resolution
degradation, then cross-entropy (optionally class-weighted)."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from mrfer.transforms import prepare, random_scales


def ce_loss(mean: torch.Tensor, std: torch.Tensor, augment_cfg: dict, augment_gen: torch.Generator,
            weight: torch.Tensor | None = None, scales: list[str] | None = None,
            p: Callable[[int], float] | None = None, scale_gen: torch.Generator | None = None,
            kernel: str = "bicubic_aa"):
    """A `loss_fn` for loop.fit: augment on the device, optionally degrade each face to a random
    scale with probability p(epoch) (multi-resolution augmentation), then cross-entropy."""

    def loss_fn(net, xb, yb, epoch):
        picks = random_scales(len(xb), scales, p(epoch), scale_gen) if scales else None
        x = prepare(xb, mean, std, augment_cfg, augment_gen, picks, kernel)
        logits, _ = net(x)
        return F.cross_entropy(logits, yb, weight=weight), logits

    return loss_fn
