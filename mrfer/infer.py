"""Inference: the device to run on, autocast, batched logits/probabilities/embeddings of uint8
face arrays, and test metrics at every scale. Used by training, evaluation and `predict` alike."""
from __future__ import annotations

import contextlib
import os
from typing import Annotated

import numpy as np
import torch
from pydantic import Field

from mrfer.data import shards
from mrfer.errors import InputError
from mrfer.metrics import summarize, warn_if_collapsed
from mrfer.transforms import EvalView, prepare, stats_tensors, view_crop, view_crops


# A params value naming a device.
Device = Annotated[str, Field(pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$", description="auto | cpu | cuda[:N] | mps")]


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto` is this process's GPU when there is one (its local rank under torchrun), else the CPU."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {name}: no CUDA device is available (use cpu or auto)")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA where supported (fp16 otherwise); nothing on CPU."""
    if device.type != "cuda" or not enabled:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


@torch.no_grad()
def infer(model: torch.nn.Module, images: np.ndarray, mean: list[float], std: list[float] | None,
          device: torch.device | str = "cpu", batch_size: int = 256, what: str = "logits",
          amp: bool = True) -> torch.Tensor:
    """Run `model` over NHWC uint8 `images`; `what` is logits | probs | features. Returns CPU float.
    `amp`: autocast on CUDA (bf16 where supported); False runs in float32."""
    device = torch.device(device)
    model.eval()
    m, s = stats_tensors(mean, std, device)
    crops = view_crops(eval_view(model)) if eval_view(model) else None   # a model's test view: the mean over its crops
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])).to(device)
        with autocast(device, amp):
            x = prepare(batch, m, s)
            run = model.features if what == "features" else model
            out = run(x) if crops is None else \
                sum(run(view_crop(x, eval_view(model), *crop)).float() for crop in crops) / len(crops)
        out = out.float()
        outputs.append((out.softmax(1) if what == "probs" else out).cpu())
    return torch.cat(outputs) if outputs else torch.empty(0)


def eval_view(model: torch.nn.Module) -> EvalView | None:
    """The view a model is tested through: `model.test_view` (a fine-tune's `test_view`, kept in its
    file's meta: `checkpoint.load_model`), a mapping or None; under DDP, the inner module's."""
    view = getattr(getattr(model, "module", model), "test_view", None)
    return None if view is None else EvalView(**view)


def test_at_scales(model: torch.nn.Module, data_dir: str | os.PathLike, scales: list[str],
                   norm: tuple, device: torch.device, classes: list[str], what: str) -> dict:
    """Test-set metrics at full resolution and at every downsampled scale; a warning for every
    scale where the model's predictions collapsed onto one class."""
    out = {}
    for scale in ["hr", *scales]:
        images, labels = shards.load_xy(data_dir, "test", scale)
        predicted = infer(model, images, *norm, device=device).argmax(1).numpy()
        out[scale] = summarize(labels, predicted, len(classes))
        warn_if_collapsed(out[scale], f"{what} at {scale}", classes)
    return out
