"""FER2013 (Kaggle / ICML 2013 challenge) in either of its two distributed layouts.

CSV release (`fer2013.tar.gz` from Kaggle, or the competition's `icml_face_data.csv`):

    fer2013.csv              (or fer2013/fer2013.csv, or icml_face_data.csv)
        emotion,pixels,Usage
        0,70 80 82 ... 2304 space-separated gray values (48x48, row-major) ...,Training

    `icml_face_data.csv` has the header `emotion, Usage, pixels` (other order, leading
    spaces); columns are matched by name, spaces ignored. Usage is Training / PublicTest /
    PrivateTest -> train / val / test. `public_test` places PublicTest: `val` (default), `test`
    (a test split too) or `train` (trained on, as the VGG-Face fine-tune of XiaoYee/emotion_classification
    did: Training + PublicTest for training, PrivateTest for testing).
    Emotion codes 0..6: angry, disgust, fear, happy, sad, surprise, neutral.

Image-folder release (Kaggle "fer2013" images):

    train/<class>/Training_10118481.jpg
    test/<class>/PublicTest_67735286.jpg, test/<class>/PrivateTest_10131363.jpg

    class folders angry, disgust, fear, happy, neutral, sad, surprise. The file-name prefix
    keeps the official Usage, so test/ splits back into val (PublicTest) and test (PrivateTest).

Every face is already a cropped, aligned 48x48 face (`aligned=True`). Known quirks handled:
a few images are blank (one gray value everywhere; dropped unless `drop_blank: false`), and some
images occur more than once, also across splits (1,853 repeats, 594 across splits, in the
official CSV) - matched by pixel hash for the CSV, by file hash for the images. Every repeat is
listed in `SkipLog.duplicates` (the extract stage writes them to a CSV and counts them in its
report). `duplicates: keep` (default) keeps them all, the official split; `drop_from_eval` skips
a val/test image that also occurs in train, so no test face was trained on. Repeats within one
split or between val and test are kept either way.
"""
from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from typing import Iterator

import numpy as np

from mrfer.data import labels
from mrfer.data.datasets.registry import register
from mrfer.data.datasets.folders import SPLIT_NAMES, iter_class_folders
from mrfer.data.records import Record, SkipLog, require_dir
from mrfer.errors import DatasetError

CSV_CANDIDATES = ("fer2013.csv", "fer2013/fer2013.csv", "icml_face_data.csv")
SIDE = 48
N_PIXELS = SIDE * SIDE
USAGE_SPLITS = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
PUBLIC_TEST_MODES = ("val", "test", "train")
LAYOUTS = ("auto", "csv", "folders")
DUPLICATE_MODES = ("keep", "drop_from_eval")
SPLIT_ORDER = ("train", "val", "test")   # so a repeat is reported in the later split


def find_csv(root: Path) -> Path | None:
    """The FER2013 CSV under root, trying the names it is distributed under."""
    for name in CSV_CANDIDATES:
        if (root / name).is_file():
            return root / name
    return None


def usage_split(usage: str, public_test: str) -> str | None:
    """train / val / test for a Usage value, None if the value is not one of FER2013's."""
    split = USAGE_SPLITS.get(usage.strip())
    return public_test if split == "val" else split


def first_non_integer(tokens: list[str]) -> str:
    for token in tokens:
        try:
            int(token)
        except ValueError:
            return token
    return tokens[0]


def parse_pixels(text: str) -> tuple[np.ndarray | None, str | None]:
    """(48x48 uint8 array, None), or (None, skip reason) for a pixel string."""
    tokens = text.split()
    if len(tokens) != N_PIXELS:
        return None, f"wrong pixel count: {len(tokens)} values, expected {N_PIXELS} ({SIDE}x{SIDE})"
    try:
        values = np.array(tokens, dtype=np.int64)
    except (ValueError, OverflowError):
        return None, f"bad pixels: {first_non_integer(tokens)[:20]!r} is not an integer"
    out_of_range = (values < 0) | (values > 255)
    if out_of_range.any():
        return None, f"bad pixels: value {values[out_of_range][0]} outside 0..255"
    return values.astype(np.uint8).reshape(SIDE, SIDE), None


def read_csv_rows(path: Path, required: tuple[str, ...],
                  source_prefix: str) -> Iterator[tuple[str, dict | None, str | None]]:
    """(source "file:line", {column: value}, None) per row, or (source, None, reason) for a row
    with the wrong field count. Header names match case-insensitively, spaces stripped."""
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f)
        try:
            header = [name.strip().lower() for name in next(reader, [])]
        except csv.Error as e:
            raise DatasetError(f"{path}: unreadable CSV header: {e}") from None
        missing = [name for name in required if name not in header]
        if missing:
            raise DatasetError(f"{path}: header {header} lacks column(s) {', '.join(missing)}")
        try:
            for row in reader:
                source = f"{source_prefix}:{reader.line_num}"
                if not row or row == [""]:
                    continue
                if len(row) != len(header):
                    yield source, None, (f"malformed row: {len(row)} fields, expected {len(header)} "
                                         f"({','.join(header)})")
                    continue
                yield source, dict(zip(header, (value.strip() for value in row))), None
        except csv.Error as e:   # e.g. an unclosed quote swallowing the rest of the file
            raise DatasetError(f"{path}: unreadable CSV near line {reader.line_num}: {e}") from None


def split_rank(split: str | None) -> int:
    return SPLIT_ORDER.index(split) if split in SPLIT_ORDER else 0


def resolve_duplicates(found: list[tuple[Record, bytes]], mode: str, skips: SkipLog) -> Iterator[Record]:
    """Yield the (record, content hash) pairs' records in order, listing every repeat of an
    earlier image in `skips.duplicates`. The first copy of an image is its first in train, val,
    test order (file order within a split), so a training image never counts as the repeat of an
    eval one. With mode `drop_from_eval` a val/test copy of a training image is skipped instead."""
    if skips.duplicates is None:
        skips.duplicates = []   # this reader looks for duplicates, even if it finds none
    first: dict[bytes, Record] = {}
    for record, key in sorted(found, key=lambda item: split_rank(item[0].split)):   # stable sort
        first.setdefault(key, record)
    for record, key in found:
        original = first[key]
        if original is record:
            yield record
            continue
        drop = mode == "drop_from_eval" and original.split == "train" and record.split != "train"
        skips.duplicate(record.source, original.source, record.split, original.split,
                        "dropped" if drop else "kept")
        if drop:
            skips.add(record.source, f"duplicate of a training image: same content as {original.source} "
                                     f"(duplicates is 'drop_from_eval')")
        else:
            yield record


def read_csv_layout(root: Path, csv_path: Path, options: dict, skips: SkipLog) -> Iterator[Record]:
    public_test = options["public_test"]
    rel = csv_path.relative_to(root).as_posix()
    found = []   # (record, pixel hash): duplicates are resolved once every split is read
    for source, row, reason in read_csv_rows(csv_path, ("emotion", "pixels"), rel):
        if reason:
            skips.add(source, reason)
            continue
        split = None
        if "usage" in row:
            split = usage_split(row["usage"], public_test)
            if split is None:
                skips.add(source, f"unknown usage: {row['usage'][:30]!r} "
                                  f"(expected {', '.join(USAGE_SPLITS)})")
                continue
        try:
            label = labels.lookup(labels.FER2013, int(row["emotion"]))
        except ValueError:
            label = None
        if label is None:
            skips.add(source, f"unknown label: emotion {row['emotion'][:20]!r} (FER2013 codes are 0..6)")
            continue
        pixels, reason = parse_pixels(row["pixels"])
        if reason:
            skips.add(source, reason)
            continue
        if options["drop_blank"] and pixels.min() == pixels.max():
            skips.add(source, f"blank image: every pixel is {pixels[0, 0]}")
            continue
        record = Record(image=pixels, label=label, source=source, split=split, aligned=True)
        found.append((record, hashlib.sha1(pixels.tobytes()).digest()))
    yield from resolve_duplicates(found, options["duplicates"], skips)


def split_from_file_name(name: str, public_test: str) -> str | None:
    """The official split a Kaggle image file carries in its name (Training_123.jpg), if any."""
    prefix = name.split("_", 1)[0]
    return usage_split(prefix, public_test) if "_" in name else None


def read_folder_layout(root: Path, options: dict, skips: SkipLog) -> Iterator[Record]:
    public_test = options["public_test"]
    split_dirs = sorted((p for p in root.iterdir() if p.is_dir() and p.name.lower() in SPLIT_NAMES),
                        key=lambda p: (SPLIT_ORDER.index(SPLIT_NAMES[p.name.lower()]), p.name))
    found = []   # (record, file hash)
    for split_dir in split_dirs:
        folder_split = SPLIT_NAMES[split_dir.name.lower()]
        for record in iter_class_folders(split_dir, {}, None, True, folder_split, root, skips):
            record.split = split_from_file_name(Path(record.source).name, public_test) or folder_split
            found.append((record, hashlib.sha1(Path(record.image).read_bytes()).digest()))
    yield from resolve_duplicates(found, options["duplicates"], skips)


def has_split_folders(root: Path) -> bool:
    return any(p.is_dir() and p.name.lower() in SPLIT_NAMES for p in root.iterdir())


@register("fer2013", layout="auto", public_test="val", drop_blank=True, duplicates="keep",
          choices={"layout": LAYOUTS, "public_test": PUBLIC_TEST_MODES, "duplicates": DUPLICATE_MODES})
def read_fer2013(root: Path, options: dict, skips: SkipLog) -> Iterator[Record]:
    """FER2013: fer2013.csv (pixel rows) or train/ test/ class folders; official splits kept."""
    require_dir(root, "FER2013 folder")
    layout = options["layout"]
    csv_path = find_csv(root) if layout in ("auto", "csv") else None
    if csv_path is not None:
        yield from read_csv_layout(root, csv_path, options, skips)
    elif layout in ("auto", "folders") and has_split_folders(root):
        yield from read_folder_layout(root, options, skips)
    else:
        expected = {"auto": f"{' or '.join(CSV_CANDIDATES)}, or train/ test/ class folders",
                    "csv": " or ".join(CSV_CANDIDATES),
                    "folders": "train/ test/ class folders"}[layout]
        raise DatasetError(f"{root}: no FER2013 data found (expected {expected})")
