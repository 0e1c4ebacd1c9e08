"""RAF-DB (Real-world Affective Faces), basic emotion part, as distributed (`basic/`).

    EmoLabel/list_patition_label.txt        (sic: "patition") one line per image:
        train_00001.jpg 5
        test_0001.jpg 1                       (test names have 4 digits, train names 5)
    Image/aligned/train_00001_aligned.jpg   100x100 aligned faces        (images: aligned)
    Image/original/train_00001.jpg          the full photos              (images: original)
    Annotation/boundingbox/train_00001_boundingbox.txt   "x1 y1 x2 y2" of the face (optional)

The root may be the `basic/` folder itself or the folder holding it. Labels: 1 surprise,
2 fear, 3 disgust, 4 happiness, 5 sadness, 6 anger, 7 neutral. The split comes from the
name prefix (train_ / test_). Original photos are not aligned: the face box from
Annotation/boundingbox is given when present, otherwise the extractor detects the face.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from mrfer.data import labels
from mrfer.data.datasets.registry import register
from mrfer.data.records import Record, SkipLog, inside, require_dir
from mrfer.errors import DatasetError

LABEL_FILE = "EmoLabel/list_patition_label.txt"
IMAGE_MODES = ("aligned", "original")
SPLIT_PREFIXES = {"train_": "train", "test_": "test"}


def dataset_root(root: Path) -> Path:
    """`root`, or `root/basic` when the archive was unpacked with its top folder."""
    if not (root / LABEL_FILE).is_file() and (root / "basic" / LABEL_FILE).is_file():
        return root / "basic"
    return root


def image_path(name: str, images: str) -> str:
    """Path of an image, relative to the dataset root, for a name in the label file."""
    if images == "aligned":
        stem, dot, suffix = name.rpartition(".")
        return f"Image/aligned/{stem}_aligned.{suffix}" if dot else f"Image/aligned/{name}_aligned"
    return f"Image/original/{name}"


def read_box(path: Path, rel: str) -> tuple[tuple[int, int, int, int] | None, str | None]:
    """(x, y, w, h), None) from a RAF-DB bounding-box file "x1 y1 x2 y2", or (None, reason)."""
    try:
        x1, y1, x2, y2 = (float(v) for v in path.read_text(encoding="utf-8", errors="replace").split())
    except ValueError:
        return None, f"bad box file: {rel} must hold 4 numbers x1 y1 x2 y2"
    if x2 <= x1 or y2 <= y1:
        return None, f"empty box: {rel} holds x1={x1:g} y1={y1:g} x2={x2:g} y2={y2:g}"
    return (round(x1), round(y1), round(x2 - x1), round(y2 - y1)), None


@register("rafdb", images="aligned")
def read_rafdb(root: Path, options: dict, skips: SkipLog) -> Iterator[Record]:
    """RAF-DB basic: list_patition_label.txt + aligned (or original) images, official split."""
    require_dir(root, "RAF-DB folder")
    images = options["images"]
    if images not in IMAGE_MODES:
        raise DatasetError(f"rafdb: images must be one of {IMAGE_MODES}, got {images!r}")
    base = dataset_root(root)
    label_file = base / LABEL_FILE
    if not label_file.is_file():
        raise DatasetError(f"{label_file}: RAF-DB label file not found")
    prefix = "" if base == root else "basic/"
    listed: dict[str, int] = {}
    lines = label_file.read_text(encoding="utf-8", errors="replace").splitlines()
    for line_no, line in enumerate(lines, start=1):
        source = f"{prefix}{LABEL_FILE}:{line_no}"
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            skips.add(source, f"malformed line: {len(fields)} fields, expected 2 (image label): "
                              f"{line[:60]!r}")
            continue
        name, code = fields
        if name in listed:
            skips.add(source, f"duplicate entry: {name} already listed on line {listed[name]}")
            continue
        listed[name] = line_no
        label = labels.lookup(labels.RAFDB, int(code)) if code.isascii() and code.isdigit() else None
        if label is None:
            skips.add(source, f"unknown label: {name} has code {code[:10]!r} (RAF-DB codes are 1..7)")
            continue
        rel = image_path(name, images)
        path = base / rel
        if inside(base, rel) is None:
            skips.add(source, f"path escapes the dataset root: {name}")
            continue
        split = next((s for p, s in SPLIT_PREFIXES.items() if Path(name).name.startswith(p)), None)
        if split is None:
            skips.add(source, f"unknown split: {name} starts with neither train_ nor test_")
            continue
        if not path.is_file():
            skips.add(prefix + rel, f"missing file: {prefix + rel} (listed on line {line_no})")
            continue
        box = None
        if images == "original":
            box_rel = f"Annotation/boundingbox/{Path(name).stem}_boundingbox.txt"
            box_path = inside(base, box_rel)
            if box_path is not None and box_path.is_file():
                box, reason = read_box(box_path, prefix + box_rel)
                if reason:
                    skips.add(prefix + box_rel, reason)
                    continue
        yield Record(image=path, label=label, source=prefix + rel, split=split, box=box,
                     aligned=images == "aligned")
