"""kfold-test: per fold, fine-tune each recipe's starting model on the fold's training part and
test it on the held-out fold at every scale (`mrfer.eval.aggregate` then takes mean ± std).

MAFER's protocol (main_oulu.py): every fold starts again from a model that never saw the FER data
(base: the face model, models/face.pt; multires: the cross-resolution model, models/cr.pt); 15 %
of the fold's training part validates; the best validation epoch is restored; the held-out fold
is tested. `distill` (our recipe) starts from the fold's own base model, trained here on the
fold's training part first. No start ever saw a held-out row: `start_rows` names the rows that
trained each start, and the tests check they are disjoint from every fold's test rows.

Folds come from the assemble stage (manifest columns `fold_subject` / `fold_image`): the
subject-independent protocol, or MAFER's image-level one (its Oulu-CASIA test). Rows of all
three assembled splits take part.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import os
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from mrfer.config import Section
from mrfer.data import lineage, lowres, shards
from mrfer.data.degrade import degrade
from mrfer.data.scales import DownsampleParams
from mrfer.data.splits import FOLD_PROTOCOLS, SPLITS, Fold, groups_of, held_out
from mrfer.errors import InputError, ParamsError
from mrfer.infer import infer, pick_device, seed_everything
from mrfer.io import write_json
from mrfer.metrics import confusion, summarize, warn_if_collapsed
from mrfer.nets import checkpoint
from mrfer.train import distill, loop
from mrfer.train.distill import FoldDistillParams
from mrfer.train.base import FinetuneParams, check_input, finetune
from mrfer.transforms import norm_stats

log = logging.getLogger(__name__)

RECIPES = ("base", "multires", "distill")


class KfoldTrainParams(FinetuneParams):
    """`kfold_test.train`: how every fold fine-tunes each model on its training part (MAFER step 2)."""

    protocol: Literal[FOLD_PROTOCOLS] = Field(
        description="subject (subject-independent folds) | image (MAFER's Oulu-CASIA protocol)")
    models: list[Literal[RECIPES]] = Field(
        min_length=1, description="base (from the face model) | multires (from the cr model) | distill "
                                  "(the distill recipe from the fold's base)")
    val_fraction: float = Field(gt=0, lt=1, description="share of the fold's training part that validates (MAFER: 0.15)")
    distill: FoldDistillParams = Field(
        description="distill per fold: the distill section's settings with these overrides (e.g. its epochs)")


class KfoldTestParams(Section):
    """`kfold_test`: one DVC stage per entry of `folds` (foreach), all trained as `train` says."""

    seed: int
    train: KfoldTrainParams
    folds: dict[str, Fold] = Field(min_length=1)


def fold_rows(data: str | os.PathLike, fold: int, protocol: str, val_fraction: float, seed: int,
              scale: str = "hr") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, labels, role) over all assembled rows: test = the held-out fold; of the rest,
    `val_fraction` validates (whole subjects under the subject protocol, images under the image
    protocol) and the others train."""
    images, labels, groups, folds, sources = [], [], [], [], []
    for split in SPLITS:
        x, rows = lowres.load_split(data, split, scale)
        images.append(np.asarray(x))
        labels.append(np.array([r["label"] for r in rows]))
        folds.append(np.array([int(r[f"fold_{protocol}"]) for r in rows]))
        groups.append(groups_of([r["subject"] or None for r in rows], [r["sequence"] or None for r in rows])
                      if protocol == "subject" else np.array([f"{split}:{i}" for i in range(len(rows))]))
    labels, groups, folds = np.concatenate(labels), np.concatenate(groups), np.concatenate(folds)
    role = np.where(folds == fold, "test", "train").astype(object)
    rest = np.flatnonzero(role == "train")
    role[rest[held_out(labels[rest], groups[rest], val_fraction, seed=seed + fold)]] = "val"
    return np.concatenate(images), labels, role.astype(str)


def start_rows(name: str) -> str:
    """Which data trained the model recipe `name` starts from, before the fold: none of it FER."""
    return {"base": "identities (face-pretrain)", "multires": "identities (face-pretrain, cr-pretrain)",
            "distill": "identities + this fold's training part (its base)"}[name]


def validation_at_scales(x: np.ndarray, y: np.ndarray, scales: list[str], kernel: str) -> tuple[np.ndarray, np.ndarray]:
    """Val faces at full resolution and at every scale (distill keeps the epoch best across them)."""
    sets = [x] + [degrade(np.ascontiguousarray(x), s, kernel) for s in scales]
    return np.concatenate(sets), np.tile(y, len(sets))


@dataclass(frozen=True)
class FoldSetup:
    """What every recipe of one fold shares: its training and validation rows, the models the
    recipes start from, the scales distill draws from, and the fold's seed and device."""

    data: loop.Data
    starts: dict[str, str]
    scales: list[str]
    kernel: str
    seed: int
    device: torch.device


def train_fold_model(name: str, cfg: KfoldTrainParams, fold: FoldSetup, trained: dict) -> torch.nn.Module:
    """The fold's model for recipe `name`; `trained` keeps the fold's base for distill's teacher."""
    if name == "distill":
        base = trained.get("base") or train_fold_model("base", cfg, fold, trained)
        student, teacher = copy.deepcopy(base), copy.deepcopy(base).eval().requires_grad_(False)
        d = cfg.distill
        data = dataclasses.replace(fold.data, val=validation_at_scales(*fold.data.val, fold.scales, fold.kernel))
        distill.distill_steps(d, student, teacher, data, loop.Run(fold.seed, "fold distill"),
                              list(d.scales or fold.scales), d.kernel or fold.kernel)
        return student
    model, _ = checkpoint.load_backbone(fold.starts[name], fold.data.n_classes, fold.device, cfg.channels_last)
    finetune(model, cfg, fold.data, loop.Run(fold.seed, f"fold {name}"))
    trained[name] = model
    return model


@dataclass(frozen=True)
class FoldFiles:
    """One fold's inputs and outputs (every one a path on the stage's dvc.yaml cmd)."""

    data: str | os.PathLike
    face: str | os.PathLike
    cr: str | os.PathLike
    report: str | os.PathLike
    confusion: str | os.PathLike


def run_fold(cfg: KfoldTrainParams, seed: int, fold: int, files: FoldFiles, downsample: DownsampleParams,
             n_folds: int) -> dict:
    """Train every recipe of `cfg.models` on fold `fold`'s training part, test each on the held-out
    fold at every scale, write the fold's report and confusion matrices."""
    if not 0 <= fold < n_folds:
        raise ParamsError(f"kfold_test.folds: fold {fold} out of range: assemble.folds is {n_folds}")
    seed_everything(seed + fold)
    device = pick_device(cfg.device)
    data = files.data
    stats = shards.read_stats(data)
    classes = stats["classes"]
    scales = list(downsample.scales)
    x, y, role = fold_rows(data, fold, cfg.protocol, cfg.val_fraction, seed)
    if not (role == "test").any():
        raise InputError(f"{data}: fold {fold} holds no rows under protocol {cfg.protocol!r}")
    tests = {s: fold_rows(data, fold, cfg.protocol, cfg.val_fraction, seed, s)[0][role == "test"] for s in ["hr", *scales]}
    y_test = y[role == "test"]
    starts = {"base": str(files.face), "multires": str(files.cr)}
    test_faces = lineage.face_hashes(x[role == "test"])
    for name in sorted({"base", "multires", "distill"} & set(cfg.models)):   # distill starts from the fold's base
        start = starts["multires" if name == "multires" else "base"]
        meta = checkpoint.load(start)["meta"]
        check_input(meta, stats, start)
        lineage.check_start(lineage.from_meta(meta, start), test_faces, start, f"fold {fold}'s test rows")
    norm = norm_stats(cfg.normalize, cfg.mean, cfg.std, stats)   # MAFER centres by the FER data's mean
    rows = loop.Data((x[role == "train"], y[role == "train"]), (x[role == "val"], y[role == "val"]), norm, len(classes))
    setup = FoldSetup(rows, starts, scales, downsample.kernel, seed + 100 * fold, device)
    metrics, matrices, trained = {}, {}, {}
    for name in cfg.models:
        model = train_fold_model(name, cfg, setup, trained)
        metrics[name], matrices[name] = {}, {}
        for scale, images in tests.items():
            predicted = infer(model, images, *norm, device=device).argmax(1).numpy()
            metrics[name][scale] = summarize(y_test, predicted, len(classes))
            warn_if_collapsed(metrics[name][scale], f"fold {fold} {name} at {scale}", classes)
            matrices[name][scale] = confusion(y_test, predicted, len(classes)).tolist()
        log.info("fold %d %s accuracy: %s", fold, name, {s: m["accuracy"] for s, m in metrics[name].items()})
    write_json(files.report, {"fold": fold, "protocol": cfg.protocol, "starts": {m: start_rows(m) for m in cfg.models},
                              "rows": {r: int((role == r).sum()) for r in ("train", "val", "test")}, "metrics": metrics})
    write_json(files.confusion, {"classes": classes, "confusion": matrices})
    return metrics
