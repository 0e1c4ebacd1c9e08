"""Face arrays on disk: uint8 NHWC `.npy` files (memory-mappable) + a CSV manifest, same row order."""
from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

import numpy as np

from mrfer.errors import InputError, MissingInputError
from mrfer.io import read_json

log = logging.getLogger(__name__)

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
    """Images and manifest rows of one assembled split at one stored scale (the training split below
    full resolution is stored only with `assemble.train_scales`: `mrfer.data.lowres.load_split`
    makes it from hr.npy when it is not)."""
    path = Path(directory) / split / f"{scale}.npy"
    if not path.is_file() and scale != "hr":
        stored_kernel(directory, split, scale)   # a clear error where assemble would not store it either
        raise MissingInputError(f"{path}: not stored (assemble.train_scales false); read it with "
                                f"mrfer.data.lowres.load_split, which makes it from hr.npy")
    images = load_array(path, mmap=mmap)
    rows = read_manifest(path.parent / "manifest.csv")
    if len(rows) != len(images):
        raise InputError(f"{path.parent}: {scale}.npy has {len(images)} rows but manifest.csv has {len(rows)}")
    return images, rows


def stored_kernel(directory: str | os.PathLike, split: str, scale: str) -> str:
    """The downsample kernel to make `<split>/<scale>.npy` with, from stats.json; MissingInputError
    where assemble would not have stored that scale either (it is not among stats' scales)."""
    directory = Path(directory)
    path, stats_path = directory / split / f"{scale}.npy", directory / "stats.json"
    if not (directory / split / "hr.npy").is_file() or not stats_path.is_file():
        raise MissingInputError(f"{path}: array not found (run the stage that writes it first)")
    stats = read_json(stats_path)
    if scale not in stats.get("scales", []):
        raise MissingInputError(f"{path}: array not found, and {scale} is not among the assembled scales "
                                f"{stats.get('scales', [])} of {stats_path} (add it to downsample.scales, "
                                f"then re-run downsample and assemble)")
    if "kernel" not in stats:
        raise InputError(f"{stats_path}: no 'kernel' recorded, so {path} cannot be made from hr.npy "
                         f"(written by an older assemble); re-run assemble")
    return stats["kernel"]


def load_xy(directory: str | os.PathLike, split: str, scale: str = "hr") -> tuple[np.ndarray, np.ndarray]:
    """A split's images (read into memory once) and labels."""
    images, labels = open_xy(directory, split, scale)
    return (np.array(images) if isinstance(images, np.memmap) else images), labels


def open_xy(directory: str | os.PathLike, split: str, scale: str = "hr") -> tuple[np.memmap, np.ndarray]:
    """A split's images, memory-mapped (nothing read yet: `ArrayLoader` streams a training split
    larger than its memory budget from this), and labels. A scale assemble did not store comes
    back in memory (see `mrfer.data.lowres`)."""
    images, rows = load_split(directory, split, scale)
    return images, np.array([r["label"] for r in rows], dtype=np.int64)


def read_stats(directory: str | os.PathLike) -> dict:
    """The assembled set's stats.json: classes, size, channels, mean/std, class counts."""
    return read_json(Path(directory) / "stats.json")
