"""extract-identities: a face-recognition dataset (vggface2, casia_webface) -> train/val face arrays
laid out like the assembled FER data (`<split>/hr.npy` + `manifest.csv`, `stats.json`), so the
identity steps (face-pretrain, cr-pretrain) read it with the same loaders.

Faces are cropped at the FER data's size and colour (`extract.size`, `extract.color`), so the face
model's input is the FER model's; a face with no box is found by `extract.detector`. Validation holds out `val_fraction` of every identity's images
(closed-set identification, as MAFER's cross-resolution step validates).
"""
from __future__ import annotations

import dataclasses
import logging
import os
from collections import Counter
from typing import Any

import numpy as np
from pydantic import Field, ValidationInfo, field_validator
from tqdm import tqdm

from mrfer.config import Section
from mrfer.data import datasets
from mrfer.data.assemble import channel_stats
from mrfer.data.faces import extract_face, load_image
from mrfer.data.records import Record, SkipLog
from mrfer.data.shards import write_manifest
from mrfer.errors import DatasetError, ImageError
from mrfer.io import atomic_path, write_json

log = logging.getLogger(__name__)

FIELDS = ("source", "label", "class", "subject", "source_split", "located")


class ExtractIdentitiesParams(Section):
    """`extract_identities`: which face-recognition set, and the validation hold-out."""

    seed: int
    dataset: str = Field(description="an identity reader: " + " | ".join(datasets.available("identity")))
    root: str = Field(min_length=1, description="the dataset's folder, in its official layout")
    options: dict[str, Any] = Field(description="the reader's own options; one left out takes the reader's default")
    margin: float = Field(ge=0, le=1, description="crop margin around the box, per side, as a fraction")
    val_fraction: float = Field(gt=0, lt=1, description="share of each identity's images held out to validate")

    @field_validator("dataset")
    @classmethod
    def _identity_reader(cls, name: str) -> str:
        if name not in datasets.available("identity"):
            raise ValueError(f"not an identity reader (known: {', '.join(datasets.available('identity'))})")
        return name

    @field_validator("options")
    @classmethod
    def _reader_takes_options(cls, options: dict, info: ValidationInfo) -> dict:
        if "dataset" in info.data:
            datasets.check_options(info.data["dataset"], options)
        return options


def box_inside(box: tuple[int, int, int, int], width: int, height: int) -> bool:
    """At least half of the box lies inside the image."""
    x, y, w, h = box
    overlap_w = max(0, min(x + w, width) - max(x, 0))
    overlap_h = max(0, min(y + h, height) - max(y, 0))
    return overlap_w * overlap_h >= 0.5 * w * h


def crop(record: Record, size: int, color: str, margin: float, detector: str, skips: SkipLog) -> np.ndarray | None:
    """The record's face, or None with the reason in `skips` (unreadable image, box outside it, no face)."""
    try:
        image = load_image(record.image)
        if record.box is not None and not box_inside(record.box, image.shape[1], image.shape[0]):
            skips.add(record.source, f"box outside image: {record.box} on a {image.shape[1]}x{image.shape[0]} image")
            return None
        face, located = extract_face(dataclasses.replace(record, image=image), size=size, margin=margin, color=color,
                                     no_face="skip", detector=detector)
    except ImageError as e:
        face, located = None, str(e)
    if face is None:
        skips.add(record.source, located)
    return face


def val_mask(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Hold out round(fraction * n) images of each identity (at least one when it has two or more)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        k = min(len(rows) - 1, max(1, round(fraction * len(rows))))
        mask[rng.permutation(rows)[:k]] = True
    return mask


def extract_identities(cfg: ExtractIdentitiesParams, size: int, color: str, detector: str,
                       out_dir: str | os.PathLike, report_path: str | os.PathLike) -> dict:
    records, skips = datasets.read(cfg.dataset, cfg.root, cfg.options)
    names = sorted({r.subject for r in records})
    faces, rows = [], []
    for record in tqdm(records, desc=f"extract {cfg.dataset}", unit="face", mininterval=2):
        face = crop(record, size, color, cfg.margin, detector, skips)
        if face is not None:
            faces.append(face)
            rows.append({"source": record.source, "label": record.label, "class": names[record.label],
                         "subject": record.subject, "source_split": record.split, "located": "box" if record.box else "detected"})
    kept = Counter(r["label"] for r in rows)
    if len(kept) < 2 or min(kept.values()) < 2:
        raise DatasetError(f"{cfg.root}: face recognition needs 2+ identities with 2+ faces each "
                           f"({len(kept)} identities kept, {len(skips)} faces skipped: {skips.reasons()})")
    faces, labels = np.stack(faces), np.array([r["label"] for r in rows])
    held = val_mask(labels, cfg.val_fraction, cfg.seed)
    with atomic_path(out_dir) as tmp:
        for split, mask in (("train", ~held), ("val", held)):
            (tmp / split).mkdir(parents=True)
            np.save(tmp / split / "hr.npy", faces[mask])
            write_manifest(tmp / split / "manifest.csv", [r for r, m in zip(rows, mask) if m], FIELDS)
        mean, std = channel_stats(faces[~held])
        write_json(tmp / "stats.json", {"classes": names, "size": [size, size], "channels": faces.shape[3],
                                        "mean": mean, "std": std, "scales": ["hr"]})
    report = {"dataset": cfg.dataset, "root": str(cfg.root), "identities": len(names), "faces": len(rows),
              "train": int((~held).sum()), "val": int(held.sum()), "skipped": len(skips),
              "skipped_by_reason": skips.reasons(), "skips": skips.items}
    write_json(report_path, report)
    log.info("identities: %d faces of %d identities (%d train, %d val), %d skipped",
             len(rows), len(names), report["train"], report["val"], len(skips))
    return report
