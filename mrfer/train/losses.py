"""The training step's loss the classification recipes share: on-device augmentation, optional
multi-resolution degradation (given by the recipe), then cross-entropy (optionally class-weighted).

`ce_loss(...)` binds the settings and returns the `loss_fn(net, xb, yb, epoch)` that `loop.fit`
calls; all state lives in the arguments (no closures)."""
from __future__ import annotations

import functools
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn

from mrfer.transforms import Augment, augment as augment_batch, normalize

# (float NCHW batch in 0..255, epoch) -> the batch with some faces degraded (multi-resolution augmentation)
LowRes = Callable[[torch.Tensor, int], torch.Tensor]


def cross_entropy_step(net, xb: torch.Tensor, yb: torch.Tensor, epoch: int, *, mean: torch.Tensor,
                       std: torch.Tensor, augment: Augment, augment_gen: torch.Generator,
                       weight: torch.Tensor | None = None, lowres: LowRes | None = None,
                       center: CenterLoss | None = None, center_weight: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment on the device, degrade faces with `lowres` when given (multi-resolution
    augmentation), then cross-entropy, plus `center_weight` x the centre loss of the embedding
    when `center` is given. Returns (loss, logits)."""
    x = augment_batch(xb, augment, augment_gen)
    if lowres is not None:
        x = lowres(x, epoch)
    logits, features = net(normalize(x, mean, std))
    loss = F.cross_entropy(logits, yb, weight=weight)
    if center is not None:
        loss = loss + center_weight * center(features, yb)
    return loss, logits


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


class CenterLoss(nn.Module):
    """Centre loss (Wen et al., ECCV 2016) on the embedding, as CovPoolFER's train.py adds it to
    the cross-entropy with --center_loss_factor 1e-2: mean over batch and dimensions of
    (f - c_y)^2, centres starting at zero.

    update="optimizer": the centres are a parameter moved by this loss's gradient -- what
        CovPoolFER's code does: framework.center_loss's `scatter_sub` update is never run (no
        fetched op depends on it), but `trainspd` passes tf.global_variables() to
        compute_gradients, so Adam updates the non-trainable centres. Add
        `center_loss.parameters()` to the optimiser (no weight decay: slim regularises weights only).
    update="moving": c_y <- c_y - (1 - alpha) (c_y - f) after each training batch, a buffer
        (the paper's rule, framework.center_loss's scatter_sub with --center_loss_alfa 0.9).
    """

    def __init__(self, num_classes: int, dim: int, update: Literal["optimizer", "moving"],
                 alpha: float = 0.9):
        super().__init__()
        if update not in ("optimizer", "moving"):
            raise ValueError(f"CenterLoss update must be 'optimizer' or 'moving', got {update!r}")
        self.update, self.alpha = update, alpha
        centers = torch.zeros(num_classes, dim)
        if update == "optimizer":
            self.centers = nn.Parameter(centers)
        else:
            self.register_buffer("centers", centers)

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        centers = self.centers[labels]
        loss = (features.float() - centers).pow(2).mean()
        if self.update == "moving" and self.training:
            with torch.no_grad():  # scatter_sub: a class seen twice in a batch moves twice
                self.centers.index_add_(0, labels, (1 - self.alpha) * (features.detach().float() - centers))
        return loss
