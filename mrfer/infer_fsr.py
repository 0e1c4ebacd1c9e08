"""Inference through a trained FSR-FER generator: the frozen FER model's target features of
(low-resolution) faces, super-resolved, then the rest of the FER net. Used by fsr-train's
validation and by classify's `<model>+fsr` rows."""
from __future__ import annotations

import numpy as np
import torch

from mrfer.errors import InputError
from mrfer.infer import autocast
from mrfer.nets.fsr import FSRModel, check_fer_model, check_norm, embedding_from_target, super_resolve, target_features
from mrfer.transforms import prepare, stats_tensors


@torch.no_grad()
def encode_targets(fer_model: torch.nn.Module, target: str, images: np.ndarray, mean: list[float],
                   std: list[float] | None, device: torch.device | str = "cpu", batch_size: int = 256,
                   amp: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain FER pass over uint8 NHWC `images`: (FSR target features, logits), CPU float32."""
    device = torch.device(device)
    fer_model.eval()
    m, s = stats_tensors(mean, std, device)
    targets, logits = [], []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])).to(device)
        with autocast(device, amp):
            t = target_features(fer_model, prepare(batch, m, s), target)
            out = fer_model.head(embedding_from_target(fer_model, t, target))
        targets.append(t.float().cpu())
        logits.append(out.float().cpu())
    if not targets:
        raise InputError("no images to encode")
    return torch.cat(targets), torch.cat(logits)


def fsr_features(fer_model: torch.nn.Module, fsr: FSRModel, images: np.ndarray, mean: list[float],
                 std: list[float] | None, device: torch.device | str = "cpu",
                 batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Super-resolved features of low-resolution faces.

    fer_model   the frozen FER model the FSR was trained on (`checkpoint.load_model(path)[0]`);
                checked by its weights: another model is an InputError naming the FSR file
    fsr         from `mrfer.nets.fsr.load_fsr(path, device)`
    images      (N, H, W, C) uint8 faces at the FER model's input size (e.g. `x4.npy` rows)
    mean, std   the FER model's normalisation (its meta's `mean`, `std`)

    Returns (features (N, D), logits (N, classes)), CPU float32: FER target of each face ->
    generator -> rest of the FER net -> embedding, and the FER head's logits on it.
    """
    check_fer_model(fsr, fer_model)
    check_norm(fsr, mean, std)
    device = torch.device(device)
    fsr.generator.to(device)
    lr_targets, _ = encode_targets(fer_model, fsr.target, images, mean, std, device, batch_size)
    features, logits, _ = super_resolve(fer_model, fsr.generator, fsr.target, lr_targets, device, batch_size)
    return features, logits
