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

At scale: each split is read from its memory map a chunk at a time; every embedding is computed
once per model, split, scale and input and shared by the classifiers; above
`libsvm_max_rows` training rows the SVCs are fitted by liblinear (`classifiers.make_liblinear`),
and every sklearn result names its solver in the report.
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
from tqdm import tqdm

from mrfer.config import Section
from mrfer.data import lowres, shards
from mrfer.data.scales import low_size
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

MODELS = ("base", "multires", "distill", "base+fsr", "multires+fsr", "distill+fsr")


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
    libsvm_max_rows: int = Field(
        gt=0, description="svc / svc_fsrfer: FSR-FER's libsvm SVC (time n² to n³) up to this many training rows; "
                          "above, liblinear's fit of the same linear hinge-loss SVM (time linear in the rows)")
    batch_size: int = Field(gt=0, description="inference batch size")
    device: Device


def resolution_px(size: int, scale: str, kernel: str) -> int:
    """Short side in pixels of the face the model actually saw information from, by the
    downsample kernel's size rule (`matlab` rounds up: 100 px at x3 is 34 px, not 33)."""
    return size if scale == "hr" else min(low_size(size, size, scale, kernel))


EMBED_CHUNK_BATCHES = 16  # faces read from the memory-mapped split per step of the progress bar


class Embedder:
    """(features, logits) of uint8 faces for one model variant, with or without FSR."""

    def __init__(self, name: str, models_dir: Path, device: torch.device, batch_size: int):
        fer_name, _, extra = name.partition("+")
        self.name = name
        self.model, self.meta = checkpoint.load_model(models_dir / f"{fer_name}.pt", device)
        self.device, self.batch_size = device, batch_size
        self.fsr = None
        if extra == "fsr":
            self.fsr = load_fsr(models_dir / "fsr.pt", device, fer_meta=self.meta)

    def super_resolves(self, scale: str, super_resolve_hr: bool) -> bool:
        return self.fsr is not None and (scale != "hr" or super_resolve_hr)

    def __call__(self, images: np.ndarray, scale: str, super_resolve_hr: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(features, logits); with an FSR, faces at a low `scale` go through the generator, and
        full-resolution ones too when `super_resolve_hr` (FSR-FER's protocol). `images` may be a
        memory map: it is read a chunk (whole batches) at a time."""
        chunk = self.batch_size * EMBED_CHUNK_BATCHES
        starts = range(0, max(len(images), 1), chunk)
        parts = [self.embed(np.array(images[start:start + chunk]), scale, super_resolve_hr)
                 for start in tqdm(starts, desc=f"{self.name} embeddings at {scale}", unit="chunk",
                                   disable=len(starts) < 2, leave=False, mininterval=2)]
        return np.concatenate([f for f, _ in parts]), np.concatenate([g for _, g in parts])

    @torch.no_grad()
    def embed(self, images: np.ndarray, scale: str, super_resolve_hr: bool) -> tuple[np.ndarray, np.ndarray]:
        norm = (self.meta["mean"], self.meta["std"])
        if self.super_resolves(scale, super_resolve_hr):
            features, logits = fsr_features(self.model, self.fsr, images, *norm, device=self.device,
                                            batch_size=self.batch_size)
        else:
            features = infer(self.model, images, *norm, device=self.device, batch_size=self.batch_size,
                             what="features")
            logits = self.model.head(features.to(self.device)).float().cpu()
        return np.asarray(features, dtype=np.float32), np.asarray(logits, dtype=np.float32)


def embedded(embed: Embedder, data: str | os.PathLike, split: str, scale: str, super_resolve_hr: bool,
             cache: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, logits, labels) of a split at `scale`, computed once per model, split, scale and
    input (plain or super-resolved) and reused by every classifier that reads them."""
    key = (split, scale, embed.super_resolves(scale, super_resolve_hr))
    if key not in cache:
        images, rows = lowres.load_split(data, split, scale)  # mapped; a train scale not stored: in memory
        features, logits = embed(images, scale, super_resolve_hr)
        cache[key] = (features, logits, np.array([r["label"] for r in rows], dtype=np.int64))
    return cache[key]


def training_set(embed: Embedder, data: str | os.PathLike, fit_on: list[tuple[str, bool]], cache: dict) -> tuple:
    """(embeddings, labels) of the training faces at every (scale, super-resolve HR) of `fit_on`."""
    parts = [embedded(embed, data, "train", scale, sr, cache) for scale, sr in fit_on]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[2] for p in parts])


def fsrfer_fit_on(embed: Embedder, scales: list[str], fit: str) -> list[tuple[str, bool]]:
    """svc_fsrfer's training set: the training faces at full resolution, or, for a +fsr model with
    `fit` == "scales", at every low-resolution scale; super-resolved by a +fsr model at every scale."""
    return [(s, True) for s in (scales if fit == "scales" and embed.fsr is not None else ["hr"])]


def fit_classifier(clf: str, x: np.ndarray, y: np.ndarray, cfg: ClassifyParams, what: str) -> tuple[object, str]:
    """A fitted sklearn classifier and the solver that fitted it: FSR-FER's libsvm SVC up to
    `libsvm_max_rows` training rows, liblinear's linear-time fit of the same SVM above."""
    solver = classifiers.solver(clf, len(x), cfg.libsvm_max_rows)
    model = classifiers.make_liblinear(clf, cfg.seed) if solver == "liblinear" else classifiers.make(clf, cfg.seed)
    with classifiers.progress(f"{what}: fitting {clf} ({solver}) on {x.shape[0]} x {x.shape[1]} embeddings"):
        model.fit(x, y)
    return model, solver


def classify(cfg: ClassifyParams, data: str | os.PathLike, models_dir: str | os.PathLike, scales: list[str],
             kernel: str, report: str | os.PathLike, table: str | os.PathLike, curves_dir: str | os.PathLike,
             predictions: str | os.PathLike) -> dict:
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    stats = shards.read_stats(data)
    classes, size = stats["classes"], stats["size"][0]
    log.info("svc / svc_fsrfer: libsvm up to %d training rows, liblinear above", cfg.libsvm_max_rows)
    all_scales = ["hr", *scales]
    y_test = np.array([r["label"] for r in shards.load_split(data, "test")[1]], dtype=np.int64)
    results: dict = {}
    saved: dict[str, np.ndarray] = {"y_true": y_test, "classes": np.array(classes)}
    for name in cfg.models:
        embed = Embedder(name, Path(models_dir), device, cfg.batch_size)
        if embed.meta["classes"] != classes:
            raise InputError(f"{models_dir}/{name}: model classes {embed.meta['classes']} != data classes {classes}")
        cache: dict[tuple, tuple] = {}
        fitted: dict[tuple, tuple] = {}
        results[name] = {}
        for scale in all_scales:
            features, logits, _ = embedded(embed, data, "test", scale, False, cache)
            results[name][scale] = {}
            if scale == "hr":
                saved[f"{name}/hr/features"] = features
            for clf in cfg.classifiers:
                solver = None
                if clf == "head":
                    predicted = logits.argmax(1)
                else:
                    if clf == "svc_fsrfer":  # fitted once, on FSR-FER's training set; tested super-resolved
                        key, fit_on = (clf,), fsrfer_fit_on(embed, scales, cfg.fsrfer_fit)
                        x_test = embedded(embed, data, "test", scale, True, cache)[0]
                    else:
                        fit_scale = scale if cfg.fit_scale == "same" else "hr"
                        key, fit_on, x_test = (clf, fit_scale), [(fit_scale, False)], features
                    if key not in fitted:
                        x, y = training_set(embed, data, fit_on, cache)
                        fitted[key] = fit_classifier(clf, x, y, cfg, name)
                    model, solver = fitted[key]
                    predicted = model.predict(x_test)
                results[name][scale][clf] = summarize(y_test, predicted, len(classes))
                warn_if_collapsed(results[name][scale][clf], f"{name} ({clf}) at {scale}", classes)
                if solver is not None:
                    results[name][scale][clf]["solver"] = solver
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
    """Rows: model (classifier, solver); columns: scales. Cells: overall / average accuracy in %."""
    header = ("| model | classifier | solver | "
              + " | ".join(f"{s} ({resolution_px(size, s, kernel)} px)" for s in scales) + " |")
    lines = ["# Test accuracy per model and resolution", "",
             "Overall accuracy / average (mean per-class) accuracy, in %. Written by the `classify` stage. "
             "Solver: `libsvm` is FSR-FER's SVC, `liblinear` the same linear SVM fitted in linear time "
             "(training sets above `classify.libsvm_max_rows`).", "",
             header, "|" + "---|" * (len(scales) + 3)]
    for model, per_scale in results.items():
        for clf in clfs:
            solver = "/".join(dict.fromkeys(per_scale[s][clf].get("solver", "network") for s in scales))
            cells = [f"{100 * per_scale[s][clf]['accuracy']:.1f} / {100 * per_scale[s][clf]['average_accuracy']:.1f}"
                     for s in scales]
            lines.append(f"| {model} | {clf} | {solver} | " + " | ".join(cells) + " |")
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
