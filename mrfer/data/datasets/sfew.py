"""SFEW 2.0 (Static Facial Expressions in the Wild), in its distributed layout.

    Train/Train_Aligned_Faces/Angry/<movie>_<time>_<n>.png    (Train_Aligned_Faces.zip)
    Val/Val_Aligned_Faces/Happy/...                            (Val_Aligned_Faces.zip)
    or, unpacked flat:  Train/Angry/*.png   Val/Angry/*.png
                        Train_Aligned_Faces/Angry/*.png  Val_Aligned_Faces[_new]/Angry/*.png

Classes are the folders `Angry, Disgust, Fear, Happy, Neutral, Sad, Surprise`. For each split
the first existing folder of the list above is read (the aligned faces win over full movie
frames lying next to them). The test set has no public labels and is not read. Images are the
organisers' aligned face crops (`aligned`; set it false for the full frames so the detector
finds the face). SFEW has no subject ids; the movie name in a file name is not a person.
Train -> split "train"; Val -> "val", or "test" with `val_split: test` (the usual protocol,
since the official test labels are withheld).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from mrfer.data.datasets.registry import register
from mrfer.data.datasets.folders import iter_class_folders
from mrfer.data.records import Record, SkipLog, require_dir
from mrfer.errors import DatasetError

SPLITS = (("Train", "train"), ("Val", "val"))
VAL_SPLITS = ("val", "test")


def child(parent: Path, name: str) -> Path | None:
    """The sub-folder of `parent` called `name`, compared case-insensitively."""
    if not parent.is_dir():
        return None
    for path in sorted(parent.iterdir()):
        if path.is_dir() and path.name.lower() == name.lower():
            return path
    return None


def split_folder(root: Path, name: str) -> Path | None:
    """Where one split's class folders are, trying the distributed layouts in order."""
    split_dir = child(root, name)
    candidates = [child(split_dir, f"{name}_Aligned_Faces") if split_dir else None,
                  child(split_dir, f"{name}_Aligned_Faces_new") if split_dir else None,
                  child(root, f"{name}_Aligned_Faces"), child(root, f"{name}_Aligned_Faces_new"),
                  split_dir]
    return next((c for c in candidates if c is not None), None)


@register("sfew", val_split="val", aligned=True)
def read_sfew(root: Path, options: dict, skips: SkipLog) -> Iterator[Record]:
    """SFEW 2.0: Train and Val class folders of aligned faces; splits kept."""
    require_dir(root, "SFEW dataset folder")
    if options["val_split"] not in VAL_SPLITS:
        raise DatasetError(f"sfew: val_split must be one of {VAL_SPLITS}, got {options['val_split']!r}")
    tops = {name: split_folder(root, name) for name, _ in SPLITS}
    if not any(tops.values()):
        raise DatasetError(f"{root}: no SFEW split folder (expected Train/ and Val/, e.g. "
                           f"Train/Train_Aligned_Faces/Angry/*.png or Train/Angry/*.png)")
    test_dir = child(root, "Test") or child(root, "Test_Aligned_Faces")
    if test_dir is not None:
        skips.note(test_dir.relative_to(root).as_posix(), "not read: SFEW test labels are not public")
    for name, split in SPLITS:
        top = tops[name]
        if top is None:
            skips.note(name, f"no {name} folder: split '{split}' is absent")
            continue
        if not any(p.is_dir() for p in top.iterdir()):
            skips.add(top.relative_to(root).as_posix(), "empty split folder: no class folders")
            continue
        split = options["val_split"] if split == "val" else split
        yield from iter_class_folders(top, {}, None, bool(options["aligned"]), split, root, skips)
