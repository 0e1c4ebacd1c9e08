"""What a dataset reader yields (Record) and how it reports what it skipped (SkipLog)."""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mrfer.errors import DatasetError


@dataclass(frozen=True)
class ArchiveMember:
    """An image stored in a zip archive (CK+ as distributed): member `name` of `archive`.

    Only the reference is kept; `faces.load_image` reads and decodes the member when needed."""
    archive: Path
    name: str

    def __str__(self) -> str:
        return f"{self.archive}:{self.name}"


@dataclass
class Record:
    """One face. `image` is a file path, a zip member, or an array (HxW or HxWx3 BGR uint8)."""
    image: str | os.PathLike | ArchiveMember | np.ndarray
    label: int                       # canonical index (mrfer.data.labels), 7 = contempt
    source: str                      # path relative to the dataset root, or a row id
    subject: str | None = None
    split: str | None = None         # the dataset's own split ("train"/"val"/"test"), if any
    sequence: str | None = None      # sequence / clip id for video-like data
    frame: int | None = None
    box: tuple[int, int, int, int] | None = None   # x, y, w, h in image pixels
    landmarks: np.ndarray | None = None            # (68, 2) x, y
    aligned: bool = False            # image is already a cropped, aligned face


DUPLICATE_FIELDS = ("source", "first_source", "split", "first_split", "action")


@dataclass
class SkipLog:
    """Inputs a reader or the extractor refused, each with a reason a person can act on.

    `duplicates` is None for a reader that does not look for repeated images; one that does sets
    it to a list (empty if it found none) and adds a row per repeat with `duplicate`."""
    items: list[dict] = field(default_factory=list)
    notes: list[dict] = field(default_factory=list)   # findings that are kept, e.g. short sequences
    duplicates: list[dict] | None = None

    def add(self, source: str | os.PathLike, reason: str) -> None:
        self.items.append({"source": str(source), "reason": reason})

    def note(self, source: str | os.PathLike, message: str) -> None:
        self.notes.append({"source": str(source), "note": message})

    def duplicate(self, source: str, first_source: str, split: str | None, first_split: str | None,
                  action: str) -> None:
        """`source` has the same content as the earlier `first_source`; action: kept | dropped."""
        if self.duplicates is None:
            self.duplicates = []
        values = (source, first_source, split, first_split, action)
        self.duplicates.append(dict(zip(DUPLICATE_FIELDS, values)))

    def duplicate_summary(self) -> dict[str, int]:
        """Counts for the report: images that repeat an earlier one, how many of them across
        splits, how many were dropped."""
        rows = self.duplicates or []
        return {"images": len(rows),
                "across_splits": sum(row["split"] != row["first_split"] for row in rows),
                "dropped_from_eval": sum(row["action"] == "dropped" for row in rows)}

    def __len__(self) -> int:
        return len(self.items)

    def reasons(self) -> dict[str, int]:
        """Count of skips per reason kind (the text before the first ':')."""
        return dict(Counter(item["reason"].split(":")[0] for item in self.items))


def inside(root: Path, relative: str) -> Path | None:
    """`root/relative` if it stays inside root, else None (a label file must not reach `../`).

    Judged on the normalised text of the path, not by resolving links: with DVC's symlink
    cache every image is a link into the cache, and that is still inside the dataset."""
    root = Path(os.path.normpath(os.path.abspath(root)))
    path = Path(os.path.normpath(os.path.join(root, relative)))
    return path if path == root or root in path.parents else None


def require_dir(root: Path, what: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: {what} not found (expected a directory)")
    return root
