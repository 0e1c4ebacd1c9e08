"""Face arrays on disk: uint8 NHWC `.npy` files (memory-mappable) + a CSV manifest, same row order."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from mrfer.errors import InputError, MissingInputError
from mrfer.io import read_json

MANIFEST_FIELDS = ("source", "label", "class", "subject", "sequence", "frame",
                   "source_split", "located")


def write_manifest(path: str | os.PathLike, rows: list[dict], fields=MANIFEST_FIELDS) -> None:
    """Write rows to CSV (path is expected to be inside an atomic temp dir or written via one)."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields), extrasaction="raise")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in fields})


def read_manifest(path: str | os.PathLike) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: manifest not found (run the stage that writes it first)")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["label"] = int(row["label"])
    return rows


def load_array(path: str | os.PathLike, mmap: bool = True) -> np.ndarray:
    """A uint8 NHWC face array, memory-mapped by default."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: array not found (run the stage that writes it first)")
    array = np.load(path, mmap_mode="r" if mmap else None)
    if array.dtype != np.uint8 or array.ndim != 4:
        raise InputError(f"{path}: expected a uint8 NHWC array, found {array.dtype} {array.shape}")
    return array


def load_split(directory: str | os.PathLike, split: str, scale: str = "hr",
               mmap: bool = True) -> tuple[np.ndarray, list[dict]]:
    """Images and manifest rows of one assembled split at one scale."""
    directory = Path(directory) / split
    images = load_array(directory / f"{scale}.npy", mmap=mmap)
    rows = read_manifest(directory / "manifest.csv")
    if len(rows) != len(images):
        raise InputError(f"{directory}: {scale}.npy has {len(images)} rows but manifest.csv has {len(rows)}")
    return images, rows


def load_xy(directory: str | os.PathLike, split: str, scale: str = "hr") -> tuple[np.ndarray, np.ndarray]:
    """A split's images (read into memory once) and labels."""
    images, labels = open_xy(directory, split, scale)
    return np.array(images), labels


def open_xy(directory: str | os.PathLike, split: str, scale: str = "hr") -> tuple[np.memmap, np.ndarray]:
    """A split's images, memory-mapped (nothing read yet: `ArrayLoader` streams a training split
    larger than its memory budget from this), and labels."""
    images, rows = load_split(directory, split, scale)
    return images, np.array([r["label"] for r in rows], dtype=np.int64)


def read_stats(directory: str | os.PathLike) -> dict:
    """The assembled set's stats.json: classes, size, channels, mean/std, class counts."""
    return read_json(Path(directory) / "stats.json")
