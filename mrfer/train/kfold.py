"""kfold-test: per fold, fine-tune each chosen model on the fold's training part and test it on
the held-out fold at every scale; (`mrfer.eval.aggregate` then takes mean ± std over folds).

Folds come from the assemble stage (manifest columns `fold_subject` / `fold_image`): the
subject-independent protocol, or MAFER's image-level one (its Oulu-CASIA test). Rows of all
three assembled splits take part; the assembled `val` rows outside the held-out fold serve as
the validation set, so the held-out fold is never looked at before testing.
"""
from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from mrfer.config import Section
from mrfer.data import shards
from mrfer.data.splits import FOLD_PROTOCOLS, SPLITS, groups_of, held_out
from mrfer.infer import infer, pick_device, seed_everything
from mrfer.metrics import confusion, summarize, warn_if_collapsed
from mrfer.errors import InputError, ParamsError
from mrfer.io import write_json
from mrfer.nets import build, to_device
from mrfer.nets import checkpoint
from mrfer.train import losses, loop
from mrfer.train.loader import ArrayLoader
from mrfer.transforms import stats_tensors

log = logging.getLogger(__name__)

RECIPES = ("base", "multires")


class KfoldTrainParams(loop.TrainParams):
    """`kfold_test.train`: how every fold fine-tunes each model on its training part."""

    protocol: Literal[FOLD_PROTOCOLS] = Field(
        description="subject (subject-independent folds) | image (MAFER's Oulu-CASIA protocol)")
    models: list[Literal[RECIPES]] = Field(min_length=1, description="each fine-tuned from models/<name>.pt")
    init: Literal["pretrained", "scratch"] = Field(description="start from the model file's weights, or its architecture afresh")
    epochs: int = Field(gt=0)
    lr: float = Field(gt=0)
    head_lr: float = Field(gt=0)
    p: float = Field(ge=0, le=1, description="multires: probability that a training face is degraded")


class Fold(Section):
    fold: int = Field(ge=0, description="the held-out fold (0 .. assemble.folds - 1)")


class KfoldTestParams(Section):
    """`kfold_test`: one DVC stage per entry of `folds` (foreach), all trained as `train` says."""

    seed: int
    train: KfoldTrainParams
    folds: dict[str, Fold] = Field(min_length=1)


def fold_rows(data: str | os.PathLike, fold: int, protocol: str, scale: str = "hr"):
    """(images, labels, role) over all assembled rows; role is train / val / test for this fold."""
    images, labels, roles, groups = [], [], [], []
    for split in SPLITS:
        x, rows = shards.load_split(data, split, scale)
        folds = np.array([int(r[f"fold_{protocol}"]) for r in rows])
        images.append(np.array(x))
        labels.append(np.array([r["label"] for r in rows]))
        roles.append(np.where(folds == fold, "test", "val" if split == "val" else "train"))
        groups.append(groups_of([r["subject"] or None for r in rows], [r["sequence"] or None for r in rows]))
    labels, roles, groups = np.concatenate(labels), np.concatenate(roles), np.concatenate(groups)
    if not (roles == "val").any():  # every val row fell in the held-out fold: carve one from train
        train = np.flatnonzero(roles == "train")
        roles[train[held_out(labels[train], groups[train], 0.15, seed=fold)]] = "val"
    return np.concatenate(images), labels, roles


def run_fold(cfg: KfoldTrainParams, seed: int, fold: int, data: str | os.PathLike, models_dir: str | os.PathLike,
             scales: list[str], kernel: str, n_folds: int, report: str | os.PathLike,
             confusion_out: str | os.PathLike) -> dict:
    if not 0 <= fold < n_folds:
        raise ParamsError(f"kfold_test.folds: fold {fold} out of range: assemble.folds is {n_folds}")
    seed_everything(seed + fold)
    device = pick_device(cfg.device)
    stats = shards.read_stats(data)
    classes = stats["classes"]
    x, y, role = fold_rows(data, fold, cfg.protocol)
    tests = {s: fold_rows(data, fold, cfg.protocol, s)[0][role == "test"] for s in ["hr", *scales]}
    y_test = y[role == "test"]
    if len(y_test) == 0:
        raise InputError(f"{data}: fold {fold} holds no rows under protocol {cfg.protocol!r}")
    class_weight = loop.class_weights(y[role == "train"], len(classes)).to(device) if cfg.class_weighted else None
    metrics, matrices = {}, {}
    for name in cfg.models:
        model, meta = checkpoint.load_model(Path(models_dir) / f"{name}.pt", device, cfg.channels_last)
        if cfg.init == "scratch":
            model = build(meta["arch"], num_classes=len(classes), in_chans=meta["channels"],
                          image_size=meta["size"], **meta["options"])
            to_device(model, device, cfg.channels_last)
        norm = (meta["mean"], meta["std"])
        mean, std = stats_tensors(*norm, device)
        augment_gen = torch.Generator(device=device).manual_seed(seed + 100 * fold + 1)
        scale_gen = torch.Generator().manual_seed(seed + 100 * fold + 2)
        multi = name == "multires"  # keep the multi-resolution augmentation for the multires model
        loss_fn = losses.ce_loss(mean, std, cfg.augment, augment_gen, weight=class_weight,
                                 scales=scales if multi else None, p=functools.partial(constant, cfg.p),
                                 scale_gen=scale_gen, kernel=meta.get("kernel", kernel))
        loader = ArrayLoader(x[role == "train"], y[role == "train"], cfg.batch_size, device,
                             seed=seed + fold, on_device=cfg.on_device)
        loop.fit(model, loader, x[role == "val"], y[role == "val"], cfg, epochs=cfg.epochs, lr=cfg.lr,
                 head_lr=cfg.head_lr, loss_fn=loss_fn, norm=norm,
                 generators={"augment": augment_gen, "scales": scale_gen}, run_hash="", resume_path=None,
                 live_dir=None, n_classes=len(classes), desc=f"fold {fold} {name}")
        metrics[name], matrices[name] = {}, {}
        for scale, images in tests.items():
            predicted = infer(model, images, *norm, device=device).argmax(1).numpy()
            metrics[name][scale] = summarize(y_test, predicted, len(classes))
            warn_if_collapsed(metrics[name][scale], f"fold {fold} {name} at {scale}", classes)
            matrices[name][scale] = confusion(y_test, predicted, len(classes)).tolist()
        log.info("fold %d %s accuracy: %s", fold, name, {s: m["accuracy"] for s, m in metrics[name].items()})
    write_json(report, {"fold": fold, "protocol": cfg.protocol, "init": cfg.init, "metrics": metrics})
    write_json(confusion_out, {"classes": classes, "confusion": matrices})
    return metrics


def constant(p: float, epoch: int) -> float:
    """The degradation probability, the same every epoch."""
    return p
