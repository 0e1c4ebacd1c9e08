"""The training step's loss the classification recipes share: on-device augmentation, optional
multi-resolution degradation, then cross-entropy (optionally class-weighted).

`ce_loss(...)` binds the settings and returns the `loss_fn(net, xb, yb, epoch)` that `loop.fit`
calls; all state lives in the arguments (no closures)."""
from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn.functional as F

from mrfer.transforms import Augment, prepare, random_scales


def cross_entropy_step(net, xb: torch.Tensor, yb: torch.Tensor, epoch: int, *, mean: torch.Tensor,
                       std: torch.Tensor, augment: Augment, augment_gen: torch.Generator,
                       weight: torch.Tensor | None = None, scales: list[str] | None = None,
                       p: Callable[[int], float] | None = None, scale_gen: torch.Generator | None = None,
                       kernel: str = "bicubic_aa") -> tuple[torch.Tensor, torch.Tensor]:
    """Augment on the device, degrade each face to a random scale with probability p(epoch) when
    `scales` are given (multi-resolution augmentation), then cross-entropy. Returns (loss, logits)."""
    picks = random_scales(len(xb), scales, p(epoch), scale_gen) if scales else None
    x = prepare(xb, mean, std, augment, augment_gen, picks, kernel)
    logits, _ = net(x)
    return F.cross_entropy(logits, yb, weight=weight), logits


def ce_loss(mean: torch.Tensor, std: torch.Tensor, augment: Augment, augment_gen: torch.Generator,
            **options) -> Callable:
    """A `loss_fn` for `loop.fit`; `options` are `cross_entropy_step`'s keyword arguments."""
    return functools.partial(cross_entropy_step, mean=mean, std=std, augment=augment, augment_gen=augment_gen,
                             **options)


def cross_resolution_loss(student_net, teacher: torch.nn.Module, x_hr: torch.Tensor, x_lr: torch.Tensor,
                          labels: torch.Tensor, weight: float,
                          class_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """CE(student(x_lr)) + weight * MSE(student features(x_lr), teacher features(x_hr)).

    `x_hr`/`x_lr` are normalised inputs; the teacher is frozen, so only the student learns."""
    with torch.no_grad():
        target = teacher.features(x_hr)
    logits, features = student_net(x_lr)
    loss = F.cross_entropy(logits, labels, weight=class_weight) + weight * F.mse_loss(features.float(), target.float())
    return loss, logits
