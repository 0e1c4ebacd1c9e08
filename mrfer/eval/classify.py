"""classify: every model x every scale x every classifier -> overall / average accuracy, macro-F1.

Models are `base`, `multires` and `<model>+fsr` (the FSR generator applied to that model's
features of low-resolution faces; at full resolution `+fsr` is its FER model unchanged, so its
sklearn classifiers are fitted on plain HR features). Classifiers are the network's own `head`
and sklearn ones on its embeddings (`svc`, `logreg`), fitted on the training set at full
resolution or at the same scale (`fit_scale`).

`svc_fsrfer` is FSR-FER's classify protocol (classify/classify_FSRFER.py, classify_FER.py): a
linear SVC with probabilities on the L2-normalised embedding the head reads (the TF graph's
`embeddings`: CovPoolFER's 7-d bottleneck, `features` of mrfer's published covpool). A `+fsr` model runs every face through the generator, full resolution
included (the scripts feed every image to `LR_input`); its SVC is fitted on the super-resolved
training faces at full resolution (`fsrfer_fit: hr`, classify.sh line 24) or at every
low-resolution scale (`scales`, classify.sh lines 30 and 32, the SVC line 33 tests). A plain
model's SVC is fitted on its HR training faces (classify_FER.py's CovPoolFER SVC).
"""
from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from mrfer.config import Section
from mrfer.data import shards
from mrfer.data.degrade import low_size
from mrfer.eval import classifiers
from mrfer.eval.classifiers import CLASSIFIERS
from mrfer.infer import Device, infer, pick_device, seed_everything
from mrfer.metrics import summarize, warn_if_collapsed
from mrfer.errors import InputError
from mrfer.io import atomic_path, write_json, write_text
from mrfer.infer_fsr import fsr_features
from mrfer.nets import checkpoint
from mrfer.nets.fsr import load_fsr

log = logging.getLogger(__name__)

MODELS = ("base", "multires", "base+fsr", "multires+fsr")


class ClassifyParams(Section):
    """`classify`: which models, classifiers and protocol the test table holds."""

    seed: int
    models: list[Literal[MODELS]] = Field(min_length=1, description="<model>[+fsr]: +fsr applies the FSR "
                                          "generator to that model's features of low-resolution faces")
    classifiers: list[Literal[CLASSIFIERS]] = Field(
        min_length=1, description="head (the net's own) | svc (linear, L2-normalised, FSR-FER) | logreg")
    fit_scale: Literal["hr", "same"] = Field(
        description="fit svc / logreg on HR train features | on train features at the test scale")
    fsrfer_fit: Literal["hr", "scales"] = Field(
        description="svc_fsrfer on +fsr models: fit on G(f(HR train faces)) | on G(f(train faces at every "
                    "downsample scale)) (FSR-FER's classify.sh, the SVC it tests last)")
    batch_size: int = Field(gt=0, description="inference batch size")
    device: Device


def resolution_px(size: int, scale: str, kernel: str) -> int:
    """Short side in pixels of the face the model actually saw information from, by the
    downsample kernel's size rule (`matlab` rounds up: 100 px at x3 is 34 px, not 33)."""
    return size if scale == "hr" else min(low_size(size, size, scale, kernel))


class Embedder:
    """(features, logits) of uint8 faces for one model variant, with or without FSR."""

    def __init__(self, name: str, models_dir: Path, device: torch.device, batch_size: int):
        fer_name, _, extra = name.partition("+")
        self.model, self.meta = checkpoint.load_model(models_dir / f"{fer_name}.pt", device)
        self.device, self.batch_size = device, batch_size
        self.fsr = None
        if extra == "fsr":
            self.fsr = load_fsr(models_dir / "fsr.pt", device, fer_meta=self.meta)

    @torch.no_grad()
    def __call__(self, images: np.ndarray, scale: str, super_resolve_hr: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(features, logits); with an FSR, faces at a low `scale` go through the generator, and
        full-resolution ones too when `super_resolve_hr` (FSR-FER's protocol)."""
        norm = (self.meta["mean"], self.meta["std"])
        if self.fsr is not None and (scale != "hr" or super_resolve_hr):
            features, logits = fsr_features(self.model, self.fsr, images, *norm, device=self.device,
                                            batch_size=self.batch_size)
        else:
            features = infer(self.model, images, *norm, device=self.device, batch_size=self.batch_size,
                             what="features")
            logits = self.model.head(features.to(self.device)).float().cpu()
        return np.asarray(features, dtype=np.float32), np.asarray(logits, dtype=np.float32)


def train_features(embed: Embedder, data: str | os.PathLike, scale: str, cache: dict) -> tuple:
    """(embeddings, labels) of the training set at `scale`, computed once per model and scale."""
    if scale not in cache:
        images, labels = shards.load_xy(data, "train", scale)
        cache[scale] = (embed(images, scale)[0], labels)
    return cache[scale]


def fsrfer_train_features(embed: Embedder, data: str | os.PathLike, scales: list[str], fit: str,
                          cache: dict) -> tuple:
    """svc_fsrfer's training set: (embeddings, labels) of the training faces at full resolution,
    or, for a +fsr model with `fit` == "scales", at every low-resolution scale; super-resolved
    by a +fsr model at every scale."""
    fit_scales = scales if fit == "scales" and embed.fsr is not None else ["hr"]
    if "svc_fsrfer" not in cache:
        outputs, labels = [], []
        for scale in fit_scales:
            images, y = shards.load_xy(data, "train", scale)
            outputs.append(embed(images, scale, super_resolve_hr=True)[0])
            labels.append(y)
        cache["svc_fsrfer"] = (np.concatenate(outputs), np.concatenate(labels))
    return cache["svc_fsrfer"]


def fsrfer_test_features(embed: Embedder, images: np.ndarray, scale: str, features: np.ndarray) -> np.ndarray:
    """svc_fsrfer's test input: the embeddings, super-resolved at full resolution too."""
    if scale == "hr" and embed.fsr is not None:
        return embed(images, scale, super_resolve_hr=True)[0]
    return features


def classify(cfg: ClassifyParams, data: str | os.PathLike, models_dir: str | os.PathLike, scales: list[str],
             kernel: str, report: str | os.PathLike, table: str | os.PathLike, curves_dir: str | os.PathLike,
             predictions: str | os.PathLike) -> dict:
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    stats = shards.read_stats(data)
    classes, size = stats["classes"], stats["size"][0]
    all_scales = ["hr", *scales]
    test = {s: shards.load_xy(data, "test", s) for s in all_scales}
    y_test = test["hr"][1]
    results: dict = {}
    saved: dict[str, np.ndarray] = {"y_true": y_test, "classes": np.array(classes)}
    for name in cfg.models:
        embed = Embedder(name, Path(models_dir), device, cfg.batch_size)
        if embed.meta["classes"] != classes:
            raise InputError(f"{models_dir}/{name}: model classes {embed.meta['classes']} != data classes {classes}")
        train_cache: dict[str, tuple] = {}
        fitted: dict[tuple, object] = {}
        results[name] = {}
        for scale in all_scales:
            features, logits = embed(test[scale][0], scale)
            results[name][scale] = {}
            if scale == "hr":
                saved[f"{name}/hr/features"] = features
            for clf in cfg.classifiers:
                if clf == "head":
                    predicted = logits.argmax(1)
                elif clf == "svc_fsrfer":
                    if clf not in fitted:
                        x, y = fsrfer_train_features(embed, data, scales, cfg.fsrfer_fit, train_cache)
                        fitted[clf] = classifiers.make(clf, cfg.seed).fit(x, y)
                    predicted = fitted[clf].predict(fsrfer_test_features(embed, test[scale][0], scale, features))
                else:
                    fit_scale = scale if cfg.fit_scale == "same" else "hr"
                    if (clf, fit_scale) not in fitted:
                        x, y = train_features(embed, data, fit_scale, train_cache)
                        fitted[(clf, fit_scale)] = classifiers.make(clf, cfg.seed).fit(x, y)
                    predicted = fitted[(clf, fit_scale)].predict(features)
                results[name][scale][clf] = summarize(y_test, predicted, len(classes))
                warn_if_collapsed(results[name][scale][clf], f"{name} ({clf}) at {scale}", classes)
                saved[f"{name}/{scale}/{clf}"] = np.asarray(predicted)
        log.info("%s accuracy per scale (%s): %s", name, cfg.classifiers[0],
                 {s: results[name][s][cfg.classifiers[0]]["accuracy"] for s in all_scales})

    write_json(report, results)
    write_text(table, markdown_table(results, cfg.classifiers, all_scales, size, kernel))
    write_curves(curves_dir, results, cfg.classifiers, all_scales, size, kernel)
    with atomic_path(predictions) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **saved)
    return results


def markdown_table(results: dict, clfs: list[str], scales: list[str], size: int, kernel: str) -> str:
    """Rows: model (classifier); columns: scales. Cells: overall / average accuracy in %."""
    header = "| model | classifier | " + " | ".join(f"{s} ({resolution_px(size, s, kernel)} px)" for s in scales) + " |"
    lines = ["# Test accuracy per model and resolution", "",
             "Overall accuracy / average (mean per-class) accuracy, in %. Written by the `classify` stage.", "",
             header, "|" + "---|" * (len(scales) + 2)]
    for model, per_scale in results.items():
        for clf in clfs:
            cells = [f"{100 * per_scale[s][clf]['accuracy']:.1f} / {100 * per_scale[s][clf]['average_accuracy']:.1f}"
                     for s in scales]
            lines.append(f"| {model} | {clf} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_curves(directory: str | os.PathLike, results: dict, clfs: list[str], scales: list[str], size: int,
                 kernel: str) -> None:
    """One CSV per model (accuracy vs face short side), the plot data `dvc plots` draws."""
    with atomic_path(directory) as tmp:
        tmp.mkdir()
        for model, per_scale in results.items():
            with open(tmp / f"{model.replace('+', '_')}.csv", "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["scale", "resolution_px", *(f"accuracy_{c}" for c in clfs)])
                for scale in sorted(scales, key=lambda s: resolution_px(size, s, kernel)):
                    writer.writerow([scale, resolution_px(size, scale, kernel),
                                     *(per_scale[scale][c]["accuracy"] for c in clfs)])
