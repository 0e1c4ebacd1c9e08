"""Lineage: the faces a model has seen, by content, so that no start model that saw a face is used
where that face is tested.

A face is named by a 64-bit hash of its bytes (the extracted uint8 crop, which every dataset gets
with the same `extract` settings), so a dataset copied under another name, or one face in two
datasets, is recognised. Every model file records in its meta the faces its whole ancestry
trained, validated or was selected on (`seen`: sorted unique hashes) and the datasets they came
from (name, content hash, faces). A stage refuses a start model whose `seen` holds a face the stage
tests on (`check_start`), and cross-eval leaves out a model × dataset pair that is not held out.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from mrfer.data import shards
from mrfer.errors import InputError

CHUNK = 4096   # faces read at a time from a memory map


def face_hashes(images: np.ndarray) -> np.ndarray:
    """uint64 per face of an NHWC uint8 array (memory-mapped is fine): blake2b of its bytes."""
    out = np.empty(len(images), dtype=np.uint64)
    for start in range(0, len(images), CHUNK):
        block = np.ascontiguousarray(images[start:start + CHUNK])
        for i, face in enumerate(block):
            out[start + i] = int.from_bytes(hashlib.blake2b(face.tobytes(), digest_size=8).digest(), "little")
    return out


def content_hash(hashes: np.ndarray) -> str:
    """A dataset's content, whatever its name, path or row order."""
    return hashlib.sha256(np.unique(hashes).tobytes()).hexdigest()[:16]


def record(name: str, hashes: np.ndarray) -> dict:
    """The lineage of having seen the faces `hashes` of dataset `name`."""
    seen = np.unique(hashes)
    return {"datasets": [{"name": name, "content": content_hash(seen), "faces": int(len(seen))}], "seen": seen}


def empty() -> dict:
    return {"datasets": [], "seen": np.empty(0, dtype=np.uint64)}


def merge(*lineages: dict) -> dict:
    """Everything any of `lineages` has seen (a model's own data plus its start's ancestry)."""
    datasets = {}
    for lineage in lineages:
        for entry in lineage["datasets"]:
            datasets.setdefault((entry["name"], entry["content"]), entry)
    seen = np.unique(np.concatenate([lineage["seen"] for lineage in lineages] or [np.empty(0, np.uint64)]))
    return {"datasets": list(datasets.values()), "seen": seen.astype(np.uint64)}


def to_meta(lineage: dict) -> dict:
    """For a model file's meta (weights-only loadable: the hashes as an int64 tensor)."""
    return {"datasets": [dict(d) for d in lineage["datasets"]],
            "seen": torch.from_numpy(lineage["seen"].astype(np.uint64).view(np.int64))}


def from_meta(meta: dict, path) -> dict:
    """A model file's lineage; a file without one cannot prove what it saw, so it is refused."""
    lineage = meta.get("lineage")
    if lineage is None:
        raise InputError(f"{path}: records no lineage (which faces it was trained on), so it cannot be "
                         f"shown to be held out from the test faces: re-run the stage that made it")
    seen = lineage["seen"]
    seen = seen.numpy() if isinstance(seen, torch.Tensor) else np.asarray(seen)
    return {"datasets": list(lineage["datasets"]), "seen": seen.astype(np.int64).view(np.uint64)}


def overlap(lineage: dict, hashes: np.ndarray) -> int:
    """How many of the faces `hashes` the lineage has seen."""
    return int(np.isin(np.unique(hashes), lineage["seen"]).sum())


def check_start(lineage: dict, hashes: np.ndarray, start, tested: str) -> None:
    """Refuse a start whose ancestry saw any of the faces `hashes` that the stage tests on."""
    shared = overlap(lineage, hashes)
    if shared:
        names = ", ".join(sorted({d["name"] for d in lineage["datasets"]})) or "?"
        raise InputError(f"{start}: its ancestry ({names}) saw {shared} of the {len(np.unique(hashes))} faces of "
                         f"{tested}: a start must never have seen a face it is tested on (pick a start "
                         f"trained on other data)")


def split_hashes(directory, split: str) -> np.ndarray:
    """The face hashes of one assembled split (full resolution)."""
    return face_hashes(shards.load_split(directory, split)[0])


def assembled(directory, splits: list[str]) -> dict:
    """The lineage of having seen `splits` of the assembled set in `directory`."""
    name = shards.read_stats(directory).get("dataset") or Path(directory).name
    return record(name, np.concatenate([split_hashes(directory, s) for s in splits]))
