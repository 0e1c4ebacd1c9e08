"""FER2013 (Kaggle / ICML 2013 challenge) in either of its two distributed layouts.

CSV release (`fer2013.tar.gz` from Kaggle, or the competition's `icml_face_data.csv`):

    fer2013.csv              (or fer2013/fer2013.csv, or icml_face_data.csv)
        emotion,pixels,Usage
        0,70 80 82 ... 2304 space-separated gray values (48x48, row-major) ...,Training

    `icml_face_data.csv` has the header `emotion, Usage, pixels` (other order, leading
    spaces); columns are matched by name, spaces ignored. Usage is Training / PublicTest /
    PrivateTest -> train / val / test (`public_test: test` makes PublicTest a test split too).
    Emotion codes 0..6: angry, disgust, fear, happy, sad, surprise, neutral.

Image-folder release (Kaggle "fer2013" images):

    train/<class>/Training_10118481.jpg
    test/<class>/PublicTest_67735286.jpg, test/<class>/PrivateTest_10131363.jpg

    class folders angry, disgust, fear, happy, neutral, sad, surprise. The file-name prefix
    keeps the official Usage, so test/ splits back into val (PublicTest) and test (PrivateTest).

Every face is already a cropped, aligned 48x48 face (`aligned=True`). Known quirks handled:
a few images are blank (one gray value everywhere; dropped unless `drop_blank: false`), and some
images occur twice, also across splits: every repeat is reported with `SkipLog.note` (kept,
and counted in a summary note) - by pixel hash for the CSV, by file hash for the images.
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
PUBLIC_TEST_MODES = ("val", "test")
LAYOUTS = ("auto", "csv", "folders")
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
    if split == "val" and public_test == "test":
        return "test"
    return split


def check_public_test(value: str) -> str:
    if value not in PUBLIC_TEST_MODES:
        raise DatasetError(f"public_test must be one of {PUBLIC_TEST_MODES}, got {value!r}")
    return value


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


def report_duplicates(seen: dict, source: str, split: str | None, key: bytes,
                      counts: dict, skips: SkipLog) -> None:
    """Note `source` if an earlier record had the same content hash `key`."""
    if key not in seen:
        seen[key] = (source, split)
        return
    first_source, first_split = seen[key]
    across = first_split != split
    counts["all"] += 1
    counts["across"] += across
    where = f"across splits ({first_split} / {split})" if across else f"within {split or 'the dataset'}"
    skips.note(source, f"duplicate image: same content as {first_source}, {where}; kept")


def summarize_duplicates(counts: dict, what: str, skips: SkipLog) -> None:
    if counts["all"]:
        skips.note(what, f"duplicates: {counts['all']} images repeat an earlier one, "
                         f"{counts['across']} of them across splits; all kept")


def read_csv_layout(root: Path, csv_path: Path, options: dict, skips: SkipLog) -> Iterator[Record]:
    public_test = check_public_test(options["public_test"])
    rel = csv_path.relative_to(root).as_posix()
    seen, counts = {}, {"all": 0, "across": 0}
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
        report_duplicates(seen, source, split, hashlib.sha1(pixels.tobytes()).digest(), counts, skips)
        yield Record(image=pixels, label=label, source=source, split=split, aligned=True)
    summarize_duplicates(counts, rel, skips)


def split_from_file_name(name: str, public_test: str) -> str | None:
    """The official split a Kaggle image file carries in its name (Training_123.jpg), if any."""
    prefix = name.split("_", 1)[0]
    return usage_split(prefix, public_test) if "_" in name else None


def read_folder_layout(root: Path, options: dict, skips: SkipLog) -> Iterator[Record]:
    public_test = check_public_test(options["public_test"])
    split_dirs = sorted((p for p in root.iterdir() if p.is_dir() and p.name.lower() in SPLIT_NAMES),
                        key=lambda p: (SPLIT_ORDER.index(SPLIT_NAMES[p.name.lower()]), p.name))
    seen, counts = {}, {"all": 0, "across": 0}
    for split_dir in split_dirs:
        folder_split = SPLIT_NAMES[split_dir.name.lower()]
        for record in iter_class_folders(split_dir, {}, None, True, folder_split, root, skips):
            record.split = split_from_file_name(Path(record.source).name, public_test) or folder_split
            digest = hashlib.sha1(Path(record.image).read_bytes()).digest()
            report_duplicates(seen, record.source, record.split, digest, counts, skips)
            yield record
    summarize_duplicates(counts, "image folders", skips)


def has_split_folders(root: Path) -> bool:
    return any(p.is_dir() and p.name.lower() in SPLIT_NAMES for p in root.iterdir())


@register("fer2013", layout="auto", public_test="val", drop_blank=True)
def read_fer2013(root: Path, options: dict, skips: SkipLog) -> Iterator[Record]:
    """FER2013: fer2013.csv (pixel rows) or train/ test/ class folders; official splits kept."""
    require_dir(root, "FER2013 folder")
    layout = options["layout"]
    if layout not in LAYOUTS:
        raise DatasetError(f"fer2013: layout must be one of {LAYOUTS}, got {layout!r}")
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
