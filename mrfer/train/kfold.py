"""kfold-test: per fold, fine-tune each chosen model on the fold's training part and test it on
the held-out fold at every scale; then aggregate mean ± std over folds.

Folds come from the assemble stage (manifest columns `fold_subject` / `fold_image`): the
subject-independent protocol, or MAFER's image-level one (its Oulu-CASIA test). Rows of all
three assembled splits take part; the assembled `val` rows outside the held-out fold serve as
the validation set, so the held-out fold is never looked at before testing.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from mrfer.data import shards
from mrfer.data.splits import FOLD_PROTOCOLS, SPLITS, groups_of, held_out
from mrfer.infer import infer, pick_device, seed_everything
from mrfer.metrics import confusion, summarize
from mrfer.io import read_json, write_json
from mrfer.nets import build, to_device
from mrfer.nets import checkpoint
from mrfer.train import losses, loop
from mrfer.train.loader import ArrayLoader
from mrfer.transforms import AUGMENT_DEFAULTS, check_augment, stats_tensors

log = logging.getLogger(__name__)

TRAIN_DEFAULTS = {**loop.OPTIM_DEFAULTS, "protocol": "subject", "models": ["base", "multires"],
                  "init": "pretrained", "epochs": 4, "lr": 5e-4, "head_lr": 5e-4, "restore_best": False,
                  "p": 0.5, "augment": AUGMENT_DEFAULTS, "on_device": "auto"}
RECIPES = ("base", "multires")


def fold_rows(data: str | os.PathLike, fold: int, protocol: str, scale: str = "hr"):
    """(images, labels, role) over all assembled rows; role is train / val / test for this fold."""
    if protocol not in FOLD_PROTOCOLS:
        raise ValueError(f"kfold_test.protocol must be one of {FOLD_PROTOCOLS}, got {protocol!r}")
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


def run_fold(cfg: dict, fold: int, data: str | os.PathLike, models_dir: str | os.PathLike, scales: list[str],
             kernel: str, n_folds: int, report: str | os.PathLike, confusion_out: str | os.PathLike) -> dict:
    if not 0 <= fold < n_folds:
        raise ValueError(f"fold {fold} out of range: assemble.folds is {n_folds}")
    unknown = set(cfg["models"]) - set(RECIPES)
    if unknown:
        raise ValueError(f"kfold_test.models: unknown {sorted(unknown)} (known: {RECIPES})")
    seed_everything(cfg["seed"] + fold)
    device = pick_device(cfg["device"])
    stats = shards.read_stats(data)
    classes = stats["classes"]
    x, y, role = fold_rows(data, fold, cfg["protocol"])
    tests = {s: fold_rows(data, fold, cfg["protocol"], s)[0][role == "test"] for s in ["hr", *scales]}
    y_test = y[role == "test"]
    if len(y_test) == 0:
        raise ValueError(f"fold {fold} holds no rows under protocol {cfg['protocol']!r}")
    augment = check_augment(cfg)
    metrics, matrices = {}, {}
    for name in cfg["models"]:
        model, meta = checkpoint.load_model(Path(models_dir) / f"{name}.pt", device)
        if cfg["init"] == "scratch":
            model = build(meta["arch"], num_classes=len(classes), in_chans=meta["channels"],
                          image_size=meta["size"], **meta["options"])
            to_device(model, device)
        norm = (meta["mean"], meta["std"])
        mean, std = stats_tensors(*norm, device)
        augment_gen = torch.Generator(device=device).manual_seed(cfg["seed"] + 100 * fold + 1)
        scale_gen = torch.Generator().manual_seed(cfg["seed"] + 100 * fold + 2)
        multi = name == "multires"  # keep the multi-resolution augmentation for the multires model
        loss_fn = losses.ce_loss(mean, std, augment, augment_gen, scales=scales if multi else None,
                                 p=lambda epoch: cfg["p"], scale_gen=scale_gen,
                                 kernel=meta.get("kernel", kernel))
        loader = ArrayLoader(x[role == "train"], y[role == "train"], cfg["batch_size"], device,
                             seed=cfg["seed"] + fold, on_device=cfg["on_device"])
        loop.fit(model, loader, x[role == "val"], y[role == "val"], cfg, loss_fn=loss_fn, norm=norm,
                 generators={"augment": augment_gen, "scales": scale_gen}, run_hash="", resume_path=None,
                 live_dir=None, n_classes=len(classes), desc=f"fold {fold} {name}")
        metrics[name], matrices[name] = {}, {}
        for scale, images in tests.items():
            predicted = infer(model, images, *norm, device=device).argmax(1).numpy()
            metrics[name][scale] = summarize(y_test, predicted, len(classes))
            matrices[name][scale] = confusion(y_test, predicted, len(classes)).tolist()
        log.info("fold %d %s accuracy: %s", fold, name, {s: m["accuracy"] for s, m in metrics[name].items()})
    write_json(report, {"fold": fold, "protocol": cfg["protocol"], "init": cfg["init"], "metrics": metrics})
    write_json(confusion_out, {"classes": classes, "confusion": matrices})
    return metrics


def aggregate(fold_reports: list[str | os.PathLike], out: str | os.PathLike) -> dict:
    """Mean ± std over folds of every metric, per model and scale."""
    reports = [read_json(p) for p in fold_reports]
    if not reports:
        raise ValueError("no fold reports to aggregate")
    result: dict = {"folds": len(reports), "protocol": reports[0]["protocol"], "init": reports[0]["init"]}
    for model, per_scale in reports[0]["metrics"].items():
        result[model] = {}
        for scale in per_scale:
            entry = {}
            for key in ("accuracy", "average_accuracy", "macro_f1"):
                values = np.array([r["metrics"][model][scale][key] for r in reports])
                entry[f"{key}_mean"] = round(float(values.mean()), 4)
                entry[f"{key}_std"] = round(float(values.std(ddof=1)) if len(values) > 1 else 0.0, 4)
            result[model][scale] = entry
    write_json(out, result)
    return result
