"""What both training recipes need: data, normalisation, model set-up, test-at-every-scale."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from mrfer.data import shards
from mrfer.eval.embeddings import infer
from mrfer.eval.metrics import summarize
from mrfer.io import read_json
from mrfer.train.presets import AUGMENT_DEFAULTS, prepare, random_scales

NORMALIZE = ("mean", "mean_std")


def load_xy(data_dir: str | os.PathLike, split: str, scale: str = "hr") -> tuple[np.ndarray, np.ndarray]:
    """A split's images (read into memory once) and labels."""
    images, rows = shards.load_split(data_dir, split, scale)
    return np.array(images), np.array([r["label"] for r in rows], dtype=np.int64)


def dataset_stats(data_dir: str | os.PathLike) -> dict:
    return read_json(Path(data_dir) / "stats.json")


def norm_stats(cfg: dict, stats: dict) -> tuple[list[float], list[float] | None]:
    """(mean, std) in 0..255 units. A published mean (params) overrides the measured one;
    `normalize: mean` centres only, as MAFER did."""
    if cfg["normalize"] not in NORMALIZE:
        raise ValueError(f"normalize must be one of {NORMALIZE}, got {cfg['normalize']!r}")
    mean = [float(v) for v in (cfg.get("mean") or stats["mean"])]
    std = [float(v) for v in (cfg.get("std") or stats["std"])] if cfg["normalize"] == "mean_std" else None
    if len(mean) != stats["channels"]:
        raise ValueError(f"mean has {len(mean)} values but the data has {stats['channels']} channels")
    return mean, std


def check_augment(cfg: dict) -> dict:
    augment = {**AUGMENT_DEFAULTS, **(cfg.get("augment") or {})}
    unknown = set(augment) - set(AUGMENT_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown augment key(s) {sorted(unknown)} (allowed: {sorted(AUGMENT_DEFAULTS)})")
    return augment


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def test_all_scales(model: torch.nn.Module, data_dir: str | os.PathLike, scales: list[str],
                    norm: tuple, device: torch.device, n_classes: int) -> dict:
    """Test-set metrics at full resolution and at every downsampled scale."""
    out = {}
    for scale in ["hr", *scales]:
        images, labels = load_xy(data_dir, "test", scale)
        predicted = infer(model, images, *norm, device=device).argmax(1).numpy()
        out[scale] = summarize(labels, predicted, n_classes)
    return out


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
