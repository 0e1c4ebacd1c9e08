"""Aff-Wild2, expression set of the ABAW challenges, in its distributed layout.

    EXPR_Set/Train_Set/<video>.txt          annotations, one file per annotated person
    EXPR_Set/Validation_Set/<video>.txt
    cropped_aligned/<video>/00001.jpg ...   the organisers' aligned faces, 5-digit 1-based frame

The expression folder is found at the root or up to two levels below under the names the ABAW
releases used (`EXPR_Set`, `EXPR_Classification_Challenge`, `EXPR_Recognition_Challenge`, e.g.
`annotations/EXPR_Set/Training_Set/`); option `annotations` names it when there are several.
Split folders: `Train_Set` or `Training_Set` -> "train", `Validation_Set` -> "val" (or "test"
with `val_split: test`; the official test labels are withheld). An annotation file starts with
the header `Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise[,Other]`, then one integer
per video frame: line i is frame i, image `cropped_aligned/<video>/<i:05d>.jpg`. Codes: 0 neutral,
1 anger, 2 disgust, 3 fear, 4 happiness, 5 sadness, 6 surprise, 7 other, -1 ignore.

Every `frame_stride`-th frame (1, 1+stride, ...) is sampled. Frames coded -1 or 7 are dropped
and a labelled frame without an image (no face was found there) is skipped: each counted once
per video, not one report line per frame. A file with a non-integer or out-of-range line, or
without the header, is skipped whole. `<video>_left` / `<video>_right` are two people in one
video: each file is its own subject and sequence (the file name).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from mrfer.data import labels
from mrfer.data.datasets.registry import register
from mrfer.data.records import Record, SkipLog, inside, require_dir
from mrfer.errors import DatasetError

EXPR_NAMES = ("EXPR_Set", "EXPR_Classification_Challenge", "EXPR_Recognition_Challenge")
SPLIT_NAMES = {"train_set": "train", "training_set": "train", "validation_set": "val"}
VAL_SPLITS = ("val", "test")
HEADER = "neutral,anger,disgust,fear,happiness,sadness,surprise"
IGNORE, OTHER = -1, 7


def find_expr_dir(root: Path, annotations: str) -> Path:
    if annotations:
        if inside(root, annotations) is None:
            raise DatasetError(f"{root}: affwild2 annotations {annotations!r} escapes the dataset root")
        return require_dir(root / annotations, f"Aff-Wild2 expression annotation folder '{annotations}'")
    found = sorted(p for pattern in ("{}", "*/{}", "*/*/{}") for name in EXPR_NAMES
                   for p in root.glob(pattern.format(name)) if p.is_dir())
    if not found:
        raise DatasetError(f"{root}: no Aff-Wild2 expression annotation folder ({', '.join(EXPR_NAMES)}) "
                           f"up to two levels down (expected e.g. EXPR_Set/Train_Set/<video>.txt)")
    if len(found) > 1:
        raise DatasetError(f"{root}: several Aff-Wild2 expression annotation folders "
                           f"({', '.join(p.relative_to(root).as_posix() for p in found)}); "
                           f"choose one with option annotations")
    return found[0]


def read_codes(path: Path) -> tuple[list[int] | None, str | None]:
    """(per-frame codes, None) or (None, skip reason) for one annotation file."""
    lines = path.read_text(errors="replace").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        return None, f"empty annotation: {path.name}"
    header = lines[0].lstrip("\ufeff").replace(" ", "").lower()   # tolerate a BOM, spaces
    if header not in (HEADER, HEADER + ",other"):
        return None, (f"malformed annotation: {path.name} does not start with the header "
                      f"'Neutral,Anger,...,Surprise[,Other]' (line 1 is {lines[0][:40]!r})")
    codes = []
    for number, text in enumerate(lines[1:], start=2):
        try:
            code = int(text.strip())
        except ValueError:
            return None, (f"malformed annotation: {path.name} line {number} holds {text[:20]!r}, "
                          f"expected one integer per frame")
        if not IGNORE <= code <= OTHER:
            return None, f"label out of range: {path.name} line {number} holds {code} (codes are -1..7)"
        codes.append(code)
    if not codes:
        return None, f"empty annotation: {path.name} has a header but no frames"
    return codes, None


def read_video(ann: Path, codes: list[int], images_root: Path, root: Path, split: str,
               stride: int, skips: SkipLog) -> Iterator[Record]:
    video = ann.stem
    rel_ann = ann.relative_to(root).as_posix()
    image_dir = images_root / video
    sampled = [(i, code) for i, code in enumerate(codes, start=1) if (i - 1) % stride == 0]
    if not image_dir.is_dir():
        skips.add(rel_ann, f"missing image folder: {image_dir.relative_to(root).as_posix()}/ "
                           f"not found ({len(sampled)} sampled frames)")
        return
    present = {p.name for p in image_dir.iterdir()}
    ignored = sum(code == IGNORE for _, code in sampled)
    other = sum(code == OTHER for _, code in sampled)
    missing = []
    for frame, code in sampled:
        label = labels.lookup(labels.AFFWILD2, code)
        if label is None:
            continue
        name = f"{frame:05d}.jpg"
        if name not in present:
            missing.append(frame)
            continue
        path = image_dir / name
        yield Record(image=path, label=label, source=path.relative_to(root).as_posix(),
                     subject=video, split=split, sequence=video, frame=frame, aligned=True)
    if ignored:
        skips.add(rel_ann, f"ignored frames: {ignored} of {len(sampled)} sampled frames coded -1")
    if other:
        skips.add(rel_ann, f"other class: {other} of {len(sampled)} sampled frames coded 7 (Other)")
    if missing:
        shown = ", ".join(str(f) for f in missing[:5]) + (", ..." if len(missing) > 5 else "")
        skips.add(rel_ann, f"missing image: {len(missing)} labelled frames have no image in "
                           f"{image_dir.relative_to(root).as_posix()}/ (frames {shown})")


@register("affwild2", val_split="val", frame_stride=10, annotations="", images="cropped_aligned")
def read_affwild2(root: Path, options: dict, skips: SkipLog) -> Iterator[Record]:
    """Aff-Wild2 (ABAW EXPR): per-frame codes, sampled every frame_stride frames; splits kept."""
    require_dir(root, "Aff-Wild2 dataset folder")
    if options["val_split"] not in VAL_SPLITS:
        raise DatasetError(f"affwild2: val_split must be one of {VAL_SPLITS}, got {options['val_split']!r}")
    stride = int(options["frame_stride"])
    if stride < 1:
        raise DatasetError(f"affwild2: frame_stride must be >= 1, got {options['frame_stride']!r}")
    expr_dir = find_expr_dir(root, options["annotations"])
    if inside(root, options["images"]) is None:
        raise DatasetError(f"{root}: affwild2 images {options['images']!r} escapes the dataset root")
    images_root = require_dir(root / options["images"], f"Aff-Wild2 image folder '{options['images']}'")
    split_dirs = sorted(p for p in expr_dir.iterdir() if p.is_dir())
    for path in split_dirs:
        if path.name.lower() not in SPLIT_NAMES:
            skips.note(path.relative_to(root).as_posix(), "not read: not a Train/Validation set folder")
    split_dirs = [p for p in split_dirs if p.name.lower() in SPLIT_NAMES]
    if not split_dirs:
        raise DatasetError(f"{expr_dir}: no Train_Set/ or Validation_Set/ folder")
    seen: dict[str, str] = {}
    for split_dir in split_dirs:
        split = SPLIT_NAMES[split_dir.name.lower()]
        split = options["val_split"] if split == "val" else split
        for ann in sorted(split_dir.glob("*.txt")):
            rel_ann = ann.relative_to(root).as_posix()
            if ann.stem in seen:
                skips.add(rel_ann, f"duplicate video: {ann.stem} already read from {seen[ann.stem]}")
                continue
            seen[ann.stem] = rel_ann
            codes, reason = read_codes(ann)
            if reason:
                skips.add(rel_ann, reason)
                continue
            yield from read_video(ann, codes, images_root, root, split, stride, skips)
