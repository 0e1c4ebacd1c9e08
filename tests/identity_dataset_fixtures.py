"""Tiny face-recognition datasets (CASIA-WebFace, VGGFace2) in their distributed layouts, bad
cases included, for the identity readers. Like tests/photo_dataset_fixtures.py, every `make_*`
returns {"records": [expected record dicts], "skips": [(source, reason)], "options": {...}}; a
record's label is its identity's index among the identity folders sorted by name.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from photo_dataset_fixtures import expected, face_image, scene_image, write_image


def make_casia_webface(root: Path, identities: tuple[str, ...] = ("0000045", "0000099", "0000102"),
                       per_identity: int = 3, bad: bool = True, seed: int = 0) -> dict:
    """CASIA-WebFace/<identity>/<nnn>.jpg, 250x250 photos with the face roughly centred. With
    `bad`: a text file and a sub-folder beside the photos (each skipped: not an image file)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    out = {"records": [], "skips": [], "options": {}}
    for label, identity in enumerate(identities):
        for k in range(1, per_identity + 1):
            rel = f"CASIA-WebFace/{identity}/{k:03d}.jpg"
            write_image(root / rel, face_image(250, int(rng.integers(0, 7)), rng, color=True))
            out["records"].append(expected(rel, label, subject=identity))
    if bad:
        notes = f"CASIA-WebFace/{identities[0]}/notes.txt"
        (root / notes).write_text("downloaded 2014\n")
        extra = f"CASIA-WebFace/{identities[-1]}/more"
        write_image(root / extra / "001.jpg", face_image(250, 3, rng, color=True))
        out["skips"] += [(notes, "not an image file"), (extra, "not an image file")]
    return out


def make_vggface2(root: Path, bad: bool = True, seed: int = 0) -> dict:
    """train/<identity>/<nnnn>_<nn>.jpg and test/... with bb_landmark/loose_bb_<split>.csv
    (NAME_ID,X,Y,W,H) and loose_landmark_<split>.csv; train and test identities are disjoint, as
    in VGGFace2. Read with `split: both` ("options"). An image with no box row is a record without
    a box. With `bad`: box rows for a missing image, a path outside the split, a box that does not
    parse and an empty box (the last two leave their image a record without a box)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    layout = {"test": {"n000001": ("0001_01", "0002_01")},
              "train": {"n000002": ("0001_01", "0002_01", "0003_02"), "n000005": ("0001_01", "0004_01")}}
    index = {identity: i for i, identity in enumerate(sorted(i for ids in layout.values() for i in ids))}
    out = {"records": [], "skips": [], "options": {"split": "both"}}
    for split, identities in layout.items():
        box_rows, mark_rows = ["NAME_ID,X,Y,W,H"], ["NAME_ID," + ",".join(f"P{k}{a}" for k in range(1, 6) for a in "XY")]
        for identity, images in identities.items():
            for n, image in enumerate(images):
                name = f"{identity}/{image}"
                box = (int(rng.integers(5, 40)), int(rng.integers(5, 30)), int(rng.integers(70, 100)),
                       int(rng.integers(80, 110)))
                write_image(root / split / f"{name}.jpg", scene_image(160, 150, [(box, int(rng.integers(0, 7)))], rng))
                has_box = n != 1 or split == "test"      # the second train photo of each identity has none
                if has_box:
                    x, y, w, h = box
                    box_rows.append(f"{name},{x},{y},{w},{h}")
                    points = [(x + w * fx, y + h * fy) for fx, fy in
                              ((0.3, 0.4), (0.7, 0.4), (0.5, 0.6), (0.35, 0.8), (0.65, 0.8))]
                    mark_rows.append(",".join([name, *(f"{v:.3f}" for p in points for v in p)]))
                out["records"].append(expected(f"{split}/{name}.jpg", index[identity], split,
                                               subject=identity, box=box if has_box else None))
        if bad and split == "train":
            rows = [("n000002/0009_01,10,10,50,50", "train/n000002/0009_01.jpg",
                     "missing file: train/n000002/0009_01.jpg (listed in loose_bb_train.csv)"),
                    ("../../etc/0001_01,1,1,5,5", None,
                     "path escapes the dataset root: ../../etc/0001_01 is not <identity>/<image> in train/"),
                    ("n000002/0002_01,a,b,c,d", None, "bad box: ['a', 'b', 'c', 'd'] for n000002/0002_01"),
                    ("n000005/0004_01,10,10,0,20", None, "bad box: empty (0x20) for n000005/0004_01")]
            for row, source, reason in rows:
                box_rows.append(row)
                out["skips"].append((source or f"loose_bb_train.csv:{len(box_rows)}", reason))
        (root / "bb_landmark").mkdir(parents=True, exist_ok=True)
        (root / f"bb_landmark/loose_bb_{split}.csv").write_text("\n".join(box_rows) + "\n")
        (root / f"bb_landmark/loose_landmark_{split}.csv").write_text("\n".join(mark_rows) + "\n")
    return out
