"""pretrain-base recipe: the base FER model at full resolution (cross-entropy, augmentation)."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from mrfer.io import write_json
from mrfer.nets import build, import_weights, to_device
from mrfer.train import checkpoint, common, loop
from mrfer.train.loader import ArrayLoader
from mrfer.train.presets import AUGMENT_DEFAULTS, stats_tensors

log = logging.getLogger(__name__)

DEFAULTS = {**loop.OPTIM_DEFAULTS, "arch": "baseline_cnn", "arch_options": {}, "weights": None,
            "normalize": "mean_std", "mean": None, "std": None, "augment": AUGMENT_DEFAULTS,
            "on_device": "auto"}


def fit_base(cfg: dict, data: str | os.PathLike, out: str | os.PathLike, report: str | os.PathLike,
             scales: list[str], live_dir: str | None = "dvclive/pretrain_base",
             resume: str | os.PathLike | None = "models/resume/pretrain_base.pt") -> dict:
    common.seed_everything(cfg["seed"])
    rank, world, local_rank = loop.distributed()
    device = loop.pick_device(cfg["device"], local_rank)
    stats = common.dataset_stats(data)
    classes = stats["classes"]
    norm = common.norm_stats(cfg, stats)
    augment = common.check_augment(cfg)
    train_x, train_y = common.load_xy(data, "train")
    val_x, val_y = common.load_xy(data, "val")

    model = build(cfg["arch"], num_classes=len(classes), in_chans=stats["channels"],
                  image_size=stats["size"][0], **(cfg["arch_options"] or {}))
    if cfg["weights"]:
        import_weights(model, cfg["weights"]["kind"], cfg["weights"]["path"])
    to_device(model, device, cfg["channels_last"])

    mean, std = stats_tensors(*norm, device)
    augment_gen = torch.Generator(device=device).manual_seed(cfg["seed"] + 1)
    weight = loop.class_weights(train_y, len(classes)).to(device) if cfg["class_weighted"] else None

    loss_fn = common.ce_loss(mean, std, augment, augment_gen, weight=weight)
    loader = ArrayLoader(train_x, train_y, cfg["batch_size"], device, seed=cfg["seed"], rank=rank,
                         world_size=world, on_device=cfg["on_device"])
    run_hash = checkpoint.params_hash("pretrain_base", cfg, stats, world)
    history = loop.fit(model, loader, val_x, val_y, cfg, loss_fn=loss_fn, norm=norm,
                       generators={"augment": augment_gen}, run_hash=run_hash, resume_path=resume,
                       live_dir=live_dir, n_classes=len(classes), rank=rank, world_size=world,
                       desc="pretrain-base")
    if rank != 0:
        return {}
    meta = {"arch": cfg["arch"], "options": dict(cfg["arch_options"] or {}), "classes": classes,
            "size": stats["size"][0], "channels": stats["channels"], "mean": norm[0], "std": norm[1],
            "params_hash": run_hash, "seed": cfg["seed"], "stage": "pretrain_base"}
    checkpoint.save_model(out, model, meta)
    result = {"val": history[-1] if history else {}, "epochs_run": len(history),
              "test": common.test_all_scales(model, data, scales, norm, device, len(classes)),
              "params_hash": run_hash, "seed": cfg["seed"]}
    write_json(report, result)
    log.info("base test accuracy per scale: %s", {s: m["accuracy"] for s, m in result["test"].items()})
    return result
