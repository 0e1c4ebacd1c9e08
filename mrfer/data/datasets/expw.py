"""ExpW (Expression in-the-Wild, CUHK) as distributed.

    label/label.lst        one line per face, space-separated:
        image_name face_id_in_image face_box_top face_box_left face_box_right face_box_bottom face_box_cofidence expression_label
        afraid_African_214.jpg 0 106 215 270 270 62.8804 2
    image/origin/<image_name>     the full photos (the split `origin.7z.00N` archives unpack to origin/)

One photo can hold several faces: one record per line, with the face box converted from
top/left/right/bottom to (x, y, w, h). Labels 0..6: angry, disgust, fear, happy, sad,
surprise, neutral. There is no official split. Lines below `min_confidence` (the face
detector's score) are dropped. An empty box, or one lying mostly (over half) outside the
photo, is skipped; the photo size is read from the file header only. A line repeated
verbatim is skipped as a duplicate; two lines that give the same face different labels or
boxes are both skipped (conflicting).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from PIL import Image

from mrfer.data import labels
from mrfer.data.datasets.registry import register
from mrfer.data.records import Record, SkipLog, inside, require_dir
from mrfer.errors import DatasetError

LABEL_FILE = "label/label.lst"
IMAGE_DIR = "image/origin"
N_FIELDS = 8


def parse_line(fields: list[str]) -> tuple[dict | None, str | None]:
    try:
        face_id = int(fields[1])
        top, left, right, bottom = (round(float(v)) for v in fields[2:6])
        confidence = float(fields[6])
        code = int(fields[7])
    except ValueError:
        return None, f"malformed line: non-numeric field in {' '.join(fields)[:80]!r}"
    return {"name": fields[0], "face_id": face_id, "top": top, "left": left, "right": right,
            "bottom": bottom, "confidence": confidence, "code": code}, None


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the image header, or None if it cannot be read."""
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def box_outside(face: dict, width: int, height: int) -> bool:
    """True when less than half of the face box lies inside the photo."""
    inner_w = max(0, min(face["right"], width) - max(face["left"], 0))
    inner_h = max(0, min(face["bottom"], height) - max(face["top"], 0))
    area = (face["right"] - face["left"]) * (face["bottom"] - face["top"])
    return inner_w * inner_h * 2 < area


def read_label_lines(label_file: Path, skips: SkipLog) -> list[tuple[str, dict]]:
    """(source, parsed face) per usable line, duplicates and conflicts removed."""
    faces: dict[tuple[str, int], tuple[str, dict, str]] = {}
    conflicts: set[tuple[str, int]] = set()
    lines = label_file.read_text(encoding="utf-8", errors="replace").splitlines()
    for line_no, line in enumerate(lines, start=1):
        source = f"{LABEL_FILE}:{line_no}"
        fields = line.split()
        if not fields:
            continue
        if len(fields) != N_FIELDS:
            skips.add(source, f"malformed line: {len(fields)} fields, expected {N_FIELDS}: {line[:80]!r}")
            continue
        face, reason = parse_line(fields)
        if reason:
            skips.add(source, reason)
            continue
        key = (face["name"], face["face_id"])
        if key in faces:
            first_source, first_face, first_line = faces[key]
            if " ".join(fields) == first_line:
                skips.add(source, f"duplicate line: repeats {first_source}")
            else:
                skips.add(source, f"conflicting line: face {face['face_id']} of {face['name']} "
                                  f"differs from {first_source}")
                conflicts.add(key)
            continue
        faces[key] = (source, face, " ".join(fields))
    kept = []
    for key, (source, face, _) in faces.items():
        if key in conflicts:
            skips.add(source, f"conflicting line: face {key[1]} of {key[0]} is labelled differently later")
        else:
            kept.append((source, face))
    return kept


@register("expw", min_confidence=0.0)
def read_expw(root: Path, options: dict, skips: SkipLog) -> Iterator[Record]:
    """ExpW: label/label.lst faces (box per line) in image/origin photos."""
    require_dir(root, "ExpW folder")
    label_file = root / LABEL_FILE
    if not label_file.is_file():
        raise DatasetError(f"{label_file}: ExpW label file not found")
    min_confidence = float(options["min_confidence"])
    sizes: dict[str, tuple[int, int] | None] = {}
    for source, face in read_label_lines(label_file, skips):
        name = face["name"]
        label = labels.lookup(labels.EXPW, face["code"])
        if label is None:
            skips.add(source, f"unknown label: {name} face {face['face_id']} has code {face['code']} "
                              f"(ExpW codes are 0..6)")
            continue
        if face["confidence"] < min_confidence:
            skips.add(source, f"low confidence: {face['confidence']:g} < min_confidence {min_confidence:g}")
            continue
        if face["right"] <= face["left"] or face["bottom"] <= face["top"]:
            skips.add(source, f"empty box: top={face['top']} left={face['left']} "
                              f"right={face['right']} bottom={face['bottom']}")
            continue
        rel = f"{IMAGE_DIR}/{name}"
        path = root / IMAGE_DIR / name
        if inside(root / IMAGE_DIR, name) is None:
            skips.add(source, f"path escapes the dataset root: {name[:80]}")
            continue
        if not path.is_file():
            skips.add(source, f"missing file: {rel}")
            continue
        if name not in sizes:
            sizes[name] = image_size(path)
        if sizes[name] is None:
            skips.add(source, f"unreadable image: {rel}")
            continue
        width, height = sizes[name]
        if box_outside(face, width, height):
            skips.add(source, f"box outside image: top={face['top']} left={face['left']} "
                              f"right={face['right']} bottom={face['bottom']} in a {width}x{height} photo")
            continue
        box = (face["left"], face["top"], face["right"] - face["left"], face["bottom"] - face["top"])
        yield Record(image=path, label=label, source=f"{rel}#{face['face_id']}", box=box)
