"""Generic class folders: `<root>/<class>/*.png`, or `<root>/{train,val,test}/<class>/*`.

Folder names map to canonical classes through `class_map` (folder -> canonical name), falling
back to the usual spellings (Angry, anger, happiness, ...). A folder that maps to nothing is
skipped and reported, never guessed. `subject_regex` takes a subject id from the file name
(first group), so subject-independent splits work here too.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from mrfer.data import labels
from mrfer.data.datasets.registry import register
from mrfer.data.faces import IMAGE_SUFFIXES
from mrfer.data.records import Record, SkipLog, require_dir
from mrfer.errors import DatasetError

SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val",
               "validation": "val", "test": "test", "testing": "test"}


def class_index(folder: str, class_map: dict) -> int | None:
    name = class_map.get(folder, folder)
    try:
        return labels.index(name)
    except KeyError:
        return None


def iter_class_folders(root: Path, class_map: dict, subject_regex: str | None, aligned: bool,
                       split: str | None, rel_to: Path, skips: SkipLog) -> Iterator[Record]:
    """Records from `root/<class>/<image>`; shared by every class-folder layout (SFEW, FER2013 jpg)."""
    pattern = re.compile(subject_regex) if subject_regex else None
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(p for p in class_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        label = class_index(class_dir.name, class_map)
        if label is None:
            skips.add(class_dir.relative_to(rel_to),
                      f"unknown class folder: '{class_dir.name}' ({len(files)} images); "
                      f"map it with class_map")
            continue
        for path in files:
            subject = None
            if pattern:
                match = pattern.search(path.name)
                if not match:
                    skips.add(path.relative_to(rel_to),
                              f"no subject: file name does not match subject_regex {subject_regex!r}")
                    continue
                subject = match.group(1) if match.groups() else match.group(0)
            yield Record(image=path, label=label, source=str(path.relative_to(rel_to)),
                         subject=subject, split=split, aligned=aligned)


@register("folders", class_map={}, subject_regex=None, aligned=True)
def read_folders(root: Path, options: dict, skips: SkipLog) -> Iterator[Record]:
    """One sub-folder per class, optionally under train/val/test folders (split kept)."""
    require_dir(root, "dataset folder")
    class_map = options["class_map"] or {}
    if not isinstance(class_map, dict):
        raise DatasetError(f"folders: class_map must be a mapping folder -> class, got {class_map!r}")
    split_dirs = {p: SPLIT_NAMES[p.name.lower()] for p in root.iterdir()
                  if p.is_dir() and p.name.lower() in SPLIT_NAMES}
    tops = split_dirs.items() if split_dirs else [(root, None)]
    for top, split in sorted(tops, key=lambda t: str(t[0])):
        yield from iter_class_folders(top, class_map, options["subject_regex"],
                                      bool(options["aligned"]), split, root, skips)
