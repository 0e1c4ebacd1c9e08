"""Batched inference over uint8 face arrays: logits, probabilities or embeddings."""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from mrfer.train.presets import prepare, stats_tensors


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA where supported (fp16 otherwise); nothing on CPU."""
    if device.type != "cuda" or not enabled:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


@torch.no_grad()
def infer(model: torch.nn.Module, images: np.ndarray, mean: list[float], std: list[float] | None,
          device: torch.device | str = "cpu", batch_size: int = 256, what: str = "logits") -> torch.Tensor:
    """Run `model` over NHWC uint8 `images`; `what` is logits | probs | features. Returns CPU float."""
    device = torch.device(device)
    model.eval()
    m, s = stats_tensors(mean, std, device)
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])).to(device)
        with autocast(device):
            x = prepare(batch, m, s)
            out = model.features(x) if what == "features" else model(x)
        out = out.float()
        outputs.append((out.softmax(1) if what == "probs" else out).cpu())
    return torch.cat(outputs) if outputs else torch.empty(0)
