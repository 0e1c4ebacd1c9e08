"""AffectNet, manually annotated part, as distributed.

    Manually_Annotated_file_lists/training.csv      header line, then one row per face
    Manually_Annotated_file_lists/validation.csv    same columns, but NO header line
        subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal
        689/737db2483489148d783ef278f43f486c0a97e140fc4b6b61b84363ca.jpg,134,134,899,899,181.64;530.91;...,1,0.785714,-0.055556
    Manually_Annotated_Images/<subDirectory_filePath>
        (also found as Manually_Annotated/Manually_Annotated_Images or
         Manually_Annotated_compressed/Manually_Annotated_Images, as the archives unpack)

Expression codes: 0 neutral, 1 happy, 2 sad, 3 surprise, 4 fear, 5 disgust, 6 anger,
7 contempt (index 7), 8 none, 9 uncertain, 10 no-face (8..10 are dropped and reported).
Images are the full downloaded photos; the face is cropped by the given box
(face_x, face_y, face_width, face_height). `landmarks: true` also passes the 68 given points
(136 `;`-separated floats x1;y1;x2;y2...; they were detected automatically, so off by default).
Splits: training -> train, validation -> test (AffectNet's own test set is not public).
The automatically annotated part is not read.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator

import numpy as np

from mrfer.data import labels
from mrfer.data.datasets.registry import register
from mrfer.data.records import Record, SkipLog, inside, require_dir
from mrfer.errors import DatasetError

LISTS_DIR = "Manually_Annotated_file_lists"
LIST_SPLITS = (("training.csv", "train"), ("validation.csv", "test"))
IMAGE_DIRS = ("Manually_Annotated_Images", "Manually_Annotated/Manually_Annotated_Images",
              "Manually_Annotated_compressed/Manually_Annotated_Images")
COLUMNS = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height",
           "facial_landmarks", "expression", "valence", "arousal")
NO_LABEL = {8: "none", 9: "uncertain", 10: "no-face"}
N_LANDMARKS = 68


def parse_box(row: list[str]) -> tuple[tuple[int, int, int, int] | None, str | None]:
    try:
        x, y, w, h = (round(float(v)) for v in row[1:5])
    except ValueError:
        return None, f"bad box: face_x,face_y,face_width,face_height = {','.join(row[1:5])[:60]!r}"
    if w <= 0 or h <= 0 or x < 0 or y < 0:
        return None, f"bad box: x={x} y={y} w={w} h={h} (needs w, h > 0 and x, y >= 0)"
    return (x, y, w, h), None


def parse_landmarks(text: str) -> tuple[np.ndarray | None, str | None]:
    values = [v for v in text.split(";") if v.strip()]
    if len(values) != 2 * N_LANDMARKS:
        return None, f"bad landmarks: {len(values)} values, expected {2 * N_LANDMARKS}"
    try:
        points = np.array(values, dtype=np.float32).reshape(N_LANDMARKS, 2)
    except ValueError:
        return None, "bad landmarks: non-numeric value"
    if not np.isfinite(points).all():
        return None, "bad landmarks: non-finite value"
    return points, None


def parse_expression(text: str) -> tuple[int | None, str | None]:
    digits = text.strip().removeprefix("-")
    code = int(text) if digits.isascii() and digits.isdigit() else None
    if code in NO_LABEL:
        return None, f"no expression label: code {code} ({NO_LABEL[code]})"
    label = labels.lookup(labels.AFFECTNET, code) if code is not None else None
    if label is None:
        return None, f"unknown label: expression {text[:10]!r} (AffectNet codes are 0..10)"
    return label, None


def find_images_dir(root: Path) -> tuple[Path, str]:
    for rel in IMAGE_DIRS:
        if (root / rel).is_dir():
            return root / rel, rel
    raise DatasetError(f"{root}: AffectNet image folder not found (expected {' or '.join(IMAGE_DIRS)})")


def list_rows(list_path: Path) -> Iterator[tuple[str, list[str]]]:
    """(source "file:line", fields) per non-blank row, the header line (if any) left out."""
    with open(list_path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f)
        try:
            for row in reader:
                if row and row != [""] and row[0].strip() != COLUMNS[0]:
                    yield f"{LISTS_DIR}/{list_path.name}:{reader.line_num}", [v.strip() for v in row]
        except csv.Error as e:   # e.g. an unclosed quote swallowing the rest of the file
            raise DatasetError(f"{list_path}: unreadable CSV near line {reader.line_num}: {e}") from None


@register("affectnet", landmarks=False)
def read_affectnet(root: Path, options: dict, skips: SkipLog) -> Iterator[Record]:
    """AffectNet (manually annotated): training.csv -> train, validation.csv -> test; face boxes given."""
    require_dir(root, "AffectNet folder")
    lists = [(root / LISTS_DIR / name, split) for name, split in LIST_SPLITS]
    if not any(path.is_file() for path, _ in lists):
        raise DatasetError(f"{root / LISTS_DIR}: AffectNet label lists training.csv / "
                           f"validation.csv not found")
    images_dir, images_rel = find_images_dir(root)
    for list_path, split in lists:
        if not list_path.is_file():
            skips.note(f"{LISTS_DIR}/{list_path.name}", "label list not found: its split is empty")
            continue
        for source, row in list_rows(list_path):
            if len(row) != len(COLUMNS):
                skips.add(source, f"malformed row: {len(row)} fields, expected {len(COLUMNS)}")
                continue
            label, reason = parse_expression(row[6])
            box, reason = parse_box(row) if reason is None else (None, reason)
            landmarks = None
            if reason is None and options["landmarks"]:
                landmarks, reason = parse_landmarks(row[5])
            if reason is None and inside(images_dir, row[0]) is None:
                reason = f"path escapes the dataset root: {row[0][:80]} leaves {images_rel}/"
            if reason:
                skips.add(source, reason)
                continue
            rel = f"{images_rel}/{row[0]}"
            if not (images_dir / row[0]).is_file():
                skips.add(rel, f"missing file: {rel} (listed in {source})")
                continue
            yield Record(image=images_dir / row[0], label=label, source=rel, split=split, box=box,
                         landmarks=landmarks)
