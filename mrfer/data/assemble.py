"""assemble: split the faces by subject, write per-split arrays (val/test at every scale, train at
full resolution unless `train_scales`), stats and folds."""
from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from mrfer.config import Section
from mrfer.data import lineage, splits
from mrfer.data.shards import MANIFEST_FIELDS, load_array, read_manifest, write_manifest
from mrfer.errors import DatasetError, InputError
from mrfer.io import atomic_path, create_npy, write_json

log = logging.getLogger(__name__)

FOLD_FIELDS = ("fold_subject", "fold_image")


class AssembleParams(Section):
    """`assemble`: how the faces are split into train/val/test and k folds, by subject."""

    seed: int
    val_fraction: float = Field(ge=0, lt=1, description="share of the faces held out for validation "
                                "(0: none), where the dataset has no val split of its own")
    test_fraction: float = Field(ge=0, lt=1, description="share held out for test, where the dataset "
                                 "has no test split of its own")
    folds: int = Field(ge=2, description="k; both fold protocols (subject, image) are written to the manifests")
    keep_source_split: bool = Field(description="keep a dataset's own train/val/test split where it has one")
    train_scales: bool = Field(description="also store the training split at every low-resolution scale "
                               "(false: train at hr only; a reader asking for train at a scale gets the same "
                               "bytes made from hr.npy on the fly, see mrfer.data.shards.load_split)")

    @field_validator("test_fraction")
    @classmethod
    def _training_data_left(cls, test_fraction: float, info: ValidationInfo) -> float:
        if test_fraction + info.data.get("val_fraction", 0) >= 1:
            raise ValueError(f"val_fraction + test_fraction must be < 1 (val_fraction is "
                             f"{info.data['val_fraction']}), so some faces are left to train on")
        return test_fraction


def channel_stats(images: np.ndarray, chunk: int = 2048) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in 0..255 units, streamed so large arrays are fine."""
    total = np.zeros(images.shape[-1])
    total_sq = np.zeros(images.shape[-1])
    count = 0
    for start in range(0, len(images), chunk):
        block = np.asarray(images[start:start + chunk], dtype=np.float64)
        total += block.sum(axis=(0, 1, 2))
        total_sq += (block ** 2).sum(axis=(0, 1, 2))
        count += block.shape[0] * block.shape[1] * block.shape[2]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0))
    return [round(float(v), 4) for v in mean], [round(float(v), 4) for v in std]


def check_fits(rows: list[dict], arrays: dict[str, np.ndarray], classes: list[str],
               extracted_dir: Path, downsampled_dir: Path) -> None:
    """Refuse arrays and a manifest that were not made together, or labels outside `classes`."""
    for scale, array in arrays.items():
        if len(array) != len(rows):
            folder, stage = (extracted_dir, "extract") if scale == "hr" else (downsampled_dir, "downsample")
            raise InputError(f"{folder}: {scale} has {len(array)} faces but {extracted_dir / 'manifest.csv'} "
                             f"has {len(rows)} rows; re-run {stage}")
    bad = sorted({r["label"] for r in rows if not 0 <= r["label"] < len(classes)})
    if bad:
        raise InputError(f"{extracted_dir / 'manifest.csv'}: label(s) {bad} are not among the {len(classes)} "
                         f"classes {classes} (extract.contempt changed since extract ran?); re-run extract")


def check_classes(name: str, train_labels: np.ndarray, classes: list[str], extracted_dir: Path) -> None:
    """Refuse a training split with fewer than 2 classes: nothing to tell apart, and class
    weighting gives the one class weight 0 (a NaN loss)."""
    counts = Counter(int(k) for k in train_labels)
    if len(counts) < 2:
        found = ", ".join(f"{classes[k]}: {n}" for k, n in sorted(counts.items())) or "no faces"
        raise DatasetError(f"dataset {name} ({extracted_dir / 'manifest.csv'}): its training split has {len(counts)} "
                           f"class(es) ({found}; every other class 0); expression recognition needs at least 2: "
                           f"check datasets.{name}.root (the whole dataset?) and extract.contempt")


def stored_scales(cfg: AssembleParams, split: str, scales: list[str]) -> list[str]:
    """The scales written for `split`: all of them, except train below hr unless `train_scales`."""
    return ["hr", *scales] if split != "train" or cfg.train_scales else ["hr"]


def write_split(folder: Path, index: np.ndarray, arrays: dict[str, np.ndarray], scales: list[str]) -> None:
    """`folder/<scale>.npy` for each of `scales`: the rows `index` of that scale's array, streamed."""
    folder.mkdir(parents=True)
    for scale in scales:
        array = arrays[scale]
        out = create_npy(folder / f"{scale}.npy", (len(index), *array.shape[1:]))   # a full disk: one line
        for start in range(0, len(index), 2048):
            out[start:start + 2048] = array[index[start:start + 2048]]
        out.flush()
        del out


def assemble(cfg: AssembleParams, name: str, classes: list[str], scales: list[str], kernel: str,
             extracted_dir: str | os.PathLike, downsampled_dir: str | os.PathLike, out_dir: str | os.PathLike,
             report_path: str | os.PathLike) -> dict:
    """Split dataset `name`, then write `out_dir`; `kernel` (downsample.kernel, which made
    `downsampled_dir`) goes in stats.json, so readers can make a low-resolution train split
    assemble did not store."""
    extracted_dir, downsampled_dir = Path(extracted_dir), Path(downsampled_dir)
    rows = read_manifest(extracted_dir / "manifest.csv")
    arrays = {"hr": load_array(extracted_dir / "faces.npy")}
    arrays.update({s: load_array(downsampled_dir / f"{s}.npy") for s in scales})
    check_fits(rows, arrays, classes, extracted_dir, downsampled_dir)
    labels = np.array([r["label"] for r in rows])
    groups = splits.groups_of([r["subject"] for r in rows], [r["sequence"] for r in rows])
    source = [r["source_split"] if cfg.keep_source_split else None for r in rows]
    split = splits.assign_splits(labels, groups, source, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    check_classes(name, labels[split == "train"], classes, extracted_dir)
    for protocol in splits.FOLD_PROTOCOLS:
        folds = splits.assign_folds(labels, groups, cfg.folds, protocol, cfg.seed)
        for row, fold in zip(rows, folds):
            row[f"fold_{protocol}"] = int(fold)

    report: dict = {"dataset": name, "classes": classes, "scales": ["hr", *scales], "kernel": kernel,
                    "train_scales": cfg.train_scales, "folds": cfg.folds, "splits": {}}
    with atomic_path(out_dir) as tmp:
        for part in splits.SPLITS:
            index = np.flatnonzero(split == part)
            write_split(tmp / part, index, arrays, stored_scales(cfg, part, scales))
            split_rows = [rows[i] for i in index]
            write_manifest(tmp / part / "manifest.csv", split_rows, MANIFEST_FIELDS + FOLD_FIELDS)
            counts = Counter(int(labels[i]) for i in index)
            report["splits"][part] = {
                "faces": int(len(index)),
                "subjects": len({r["subject"] for r in split_rows if r["subject"]}),
                "groups": len(set(groups[index])),
                "per_class": {c: counts.get(k, 0) for k, c in enumerate(classes)},
            }
        mean, std = channel_stats(np.load(tmp / "train" / "hr.npy", mmap_mode="r"))
        stats = {"dataset": name, "mean": mean, "std": std, "classes": classes, "scales": ["hr", *scales], "kernel": kernel,
                 "train_scales": cfg.train_scales, "size": list(arrays["hr"].shape[1:3]),
                 "channels": int(arrays["hr"].shape[3]), "class_counts": report["splits"]["train"]["per_class"],
                 "present": [c for k, c in enumerate(classes) if (labels == k).any()]}   # classes with faces
        write_json(tmp / "stats.json", stats)

    group_sets = {n: set(groups[split == n]) for n in splits.SPLITS}
    overlap = sum(len(group_sets[a] & group_sets[b]) for a, b in
                  (("train", "val"), ("train", "test"), ("val", "test")))
    hashes = lineage.face_hashes(arrays["hr"])   # a face repeated byte for byte (FER2013's official split)
    repeated = int(np.isin(hashes[split == "test"], hashes[split != "test"]).sum())
    report.update({"mean": mean, "std": std, "groups_in_two_splits": overlap,
                   "subject_independent": overlap == 0, "test_faces_also_in_train_or_val": repeated})
    write_json(report_path, report)
    if overlap:  # only possible when a dataset's own split puts one subject in two splits
        log.warning("%d groups appear in more than one split (kept the dataset's own split)", overlap)
    if repeated:
        log.warning("%s: %d test faces also occur, byte for byte, in train or val (the dataset's own split): a "
                    "model trained here is tested on faces it saw, and no model trained here may start another "
                    "stage tested on this split (fer2013: options duplicates: drop_from_eval)", name, repeated)
    log.info("assembled %s", {n: s["faces"] for n, s in report["splits"].items()})
    return report
