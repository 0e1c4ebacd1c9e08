"""Assembled splits at a scale assemble did not store, made from `hr.npy` on the fly.

With `assemble.train_scales` false (the default) the training split is stored at full resolution
only; the few readers that want fixed low-resolution training faces (fsr-train's pairs,
classify's `fit_scale: same` and `fsrfer_fit: scales`, the k-fold's folds) read them here. The
bytes equal the copy `train_scales: true` stores: the downsample stage's function and kernel,
one face at a time (`degrade`).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from mrfer.data import shards
from mrfer.data.degrade import degrade

log = logging.getLogger(__name__)

DEGRADE_CHUNK = 512   # faces degraded per step (bounds the float copies)
_made_on_the_fly: set[tuple[str, str, str]] = set()   # (folder, split, scale) already logged


def load_split(directory: str | os.PathLike, split: str, scale: str = "hr") -> tuple[np.ndarray, list[dict]]:
    """`shards.load_split`, or the split made from hr.npy when `scale` is not stored (in memory)."""
    if scale == "hr" or (Path(directory) / split / f"{scale}.npy").is_file():
        return shards.load_split(directory, split, scale)
    images = degraded_split(directory, split, scale)
    rows = shards.read_manifest(Path(directory) / split / "manifest.csv")
    return images, rows


def load_xy(directory: str | os.PathLike, split: str, scale: str = "hr") -> tuple[np.ndarray, np.ndarray]:
    """A split's images (in memory) and labels, at any assembled scale."""
    images, rows = load_split(directory, split, scale)
    images = np.array(images) if isinstance(images, np.memmap) else images
    return images, np.array([r["label"] for r in rows], dtype=np.int64)


def degraded_split(directory: str | os.PathLike, split: str, scale: str) -> np.ndarray:
    """`<split>/<scale>.npy` as assemble would have stored it, made from `<split>/hr.npy`.

    The downsample stage's function and kernel (`degrade(faces, scale, kernel)`, which treats each
    face on its own), applied `DEGRADE_CHUNK` faces at a time, so the bytes equal the stored copy's.
    The result is held in memory (one more array the size of the HR split): fine for the readers
    that ask for it (fsr-train's fixed pairs, classify's `fit_scale: same`, k-fold's folds)."""
    kernel = shards.stored_kernel(directory, split, scale)
    hr = shards.load_array(Path(directory) / split / "hr.npy")
    key = (str(Path(directory).resolve()), split, scale)
    if key not in _made_on_the_fly:
        _made_on_the_fly.add(key)
        log.info("%s/%s/%s.npy is not stored (assemble.train_scales false): made from hr.npy on the fly "
                 "(kernel %s, %d faces, in memory)", directory, split, scale, kernel, len(hr))
    out = np.empty(hr.shape, dtype=np.uint8)
    for start in range(0, len(hr), DEGRADE_CHUNK):
        out[start:start + DEGRADE_CHUNK] = degrade(np.asarray(hr[start:start + DEGRADE_CHUNK]), scale, kernel)
    return out
