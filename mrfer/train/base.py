"""pretrain-base recipe: the base FER model at full resolution (cross-entropy, augmentation)."""
from __future__ import annotations

import logging
import os
from typing import Any, Literal

import torch
from pydantic import Field, ValidationInfo, field_validator

from mrfer.config import Section
from mrfer.data import shards
from mrfer.infer import pick_device, seed_everything, test_at_scales
from mrfer.io import write_json
from mrfer.nets import build, checkpoint, registry, to_device
from mrfer.nets.weights import KINDS, import_weights
from mrfer.train import losses, loop
from mrfer.train.loader import ArrayLoader
from mrfer.transforms import norm_stats, stats_tensors

log = logging.getLogger(__name__)


class Weights(Section):
    kind: Literal[KINDS] = Field(description="the weight file's layout: " + " | ".join(KINDS))
    path: str = Field(min_length=1, description="a local file (models/imported/...); nothing is downloaded")


class PretrainBaseParams(loop.TrainParams):
    """`pretrain_base`: the architecture, its start, and the fine-tune on the FER labels."""

    seed: int
    arch: str = Field(description="a registered model: " + " | ".join(registry.available()))
    arch_options: dict[str, Any] = Field(description="the model's own options (its builder's keyword arguments)")
    weights: Weights | None = Field(description="imported start weights, or null (random init)")
    epochs: int = Field(gt=0)
    lr: float = Field(gt=0, description="backbone learning rate")
    head_lr: float = Field(gt=0, description="classifier-head learning rate (MAFER: 1e-2 with 1e-4 backbone)")
    normalize: Literal["mean", "mean_std"] = Field(description="mean: centre only (MAFER) | mean_std")
    mean: list[float] | None = Field(description="a published dataset mean (0..255 per channel); null: measured")
    std: list[float] | None = Field(description="a published std; null: measured")

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, arch: str) -> str:
        registry.check_options(arch, {})
        return arch

    @field_validator("arch_options")
    @classmethod
    def _arch_takes_options(cls, options: dict, info: ValidationInfo) -> dict:
        if "arch" in info.data:
            registry.check_options(info.data["arch"], options)
        return options


def fit_base(cfg: PretrainBaseParams, data: str | os.PathLike, out: str | os.PathLike, report: str | os.PathLike,
             scales: list[str], live_dir: str | None, resume: str | os.PathLike | None) -> dict:
    seed_everything(cfg.seed)
    rank, world, local_rank = loop.distributed()
    device = pick_device(cfg.device, local_rank)
    stats = shards.read_stats(data)
    classes = stats["classes"]
    norm = norm_stats(cfg.normalize, cfg.mean, cfg.std, stats)
    train_x, train_y = shards.load_xy(data, "train")
    val_x, val_y = shards.load_xy(data, "val")

    model = build(cfg.arch, num_classes=len(classes), in_chans=stats["channels"], image_size=stats["size"][0],
                  **cfg.arch_options)
    if cfg.weights is not None:
        import_weights(model, cfg.weights.kind, cfg.weights.path)
    to_device(model, device, cfg.channels_last)

    mean, std = stats_tensors(*norm, device)
    augment_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    weight = loop.class_weights(train_y, len(classes)).to(device) if cfg.class_weighted else None

    loss_fn = losses.ce_loss(mean, std, cfg.augment, augment_gen, weight=weight)
    loader = ArrayLoader(train_x, train_y, cfg.batch_size, device, seed=cfg.seed, rank=rank,
                         world_size=world, on_device=cfg.on_device)
    run_hash = checkpoint.params_hash("pretrain_base", cfg.model_dump(by_alias=True), stats, world)
    history = loop.fit(model, loader, val_x, val_y, cfg, epochs=cfg.epochs, lr=cfg.lr, head_lr=cfg.head_lr,
                       loss_fn=loss_fn, norm=norm, generators={"augment": augment_gen}, run_hash=run_hash,
                       resume_path=resume, live_dir=live_dir, n_classes=len(classes), rank=rank, world_size=world,
                       desc="pretrain-base")
    if rank != 0:
        return {}
    meta = {"arch": cfg.arch, "options": dict(cfg.arch_options), "classes": classes,
            "size": stats["size"][0], "channels": stats["channels"], "mean": norm[0], "std": norm[1],
            "params_hash": run_hash, "seed": cfg.seed, "stage": "pretrain_base"}
    checkpoint.save_model(out, model, meta)
    result = {"val": history[-1] if history else {}, "epochs_run": len(history),
              "test": test_at_scales(model, data, scales, norm, device, classes, "base"),
              "params_hash": run_hash, "seed": cfg.seed}
    write_json(report, result)
    log.info("base test accuracy per scale: %s", {s: m["accuracy"] for s, m in result["test"].items()})
    return result
