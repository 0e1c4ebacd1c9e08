"""A tiny assembled dataset (the assemble stage's exact output format) with a learnable signal."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mrfer.data.degrade import degrade
from mrfer.data.shards import MANIFEST_FIELDS, write_manifest

CLASSES = ["angry", "happy", "neutral"]


def faces(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Class k: a bright blob at the k-th of three heights (so horizontal flips keep the class), plus noise."""
    images = rng.normal(100, 12, (len(labels), size, size, 1))
    yy, xx = np.mgrid[:size, :size]
    for i, k in enumerate(labels):
        cy = size * (0.25 + 0.25 * k)
        images[i, :, :, 0] += 90 * np.exp(-((xx - size / 2) ** 2 + (yy - cy) ** 2) / (2 * (size / 10) ** 2))
    return np.clip(images, 0, 255).astype(np.uint8)


def make_assembled(root: Path, n_per_class=(24, 8, 8), size: int = 32, scales=("x2", "x4"), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    root = Path(root)
    for split, n in zip(("train", "val", "test"), n_per_class):
        labels = np.repeat(np.arange(len(CLASSES)), n)
        images = faces(labels, size, rng)
        (root / split).mkdir(parents=True, exist_ok=True)
        np.save(root / split / "hr.npy", images)
        for scale in scales:
            np.save(root / split / f"{scale}.npy", degrade(images, scale, "bicubic_aa"))
        rows = [{"source": f"{split}/{i}.png", "label": int(k), "class": CLASSES[k], "subject": f"S{i % 6}",
                 "sequence": None, "frame": None, "source_split": None, "located": "aligned",
                 "fold_subject": i % 3, "fold_image": i % 3} for i, k in enumerate(labels)]
        write_manifest(root / split / "manifest.csv", rows, MANIFEST_FIELDS + ("fold_subject", "fold_image"))
    train = np.load(root / "train" / "hr.npy").astype(float)
    (root / "stats.json").write_text(json.dumps({
        "dataset": root.name, "present": CLASSES, "mean": [train.mean()], "std": [train.std()], "classes": CLASSES, "scales": ["hr", *scales],
        "size": [size, size], "channels": 1, "class_counts": {c: n_per_class[0] for c in CLASSES}}))
    return root
