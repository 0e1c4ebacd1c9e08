"""VGGFace2 (face recognition, 9,131 identities) as distributed, for MAFER's identity steps.

    train/n000002/0001_01.jpg                  <image number>_<face number>.jpg per identity folder
    test/n000001/0001_01.jpg
    bb_landmark/loose_bb_train.csv             NAME_ID,X,Y,W,H            NAME_ID = n000002/0001_01
    bb_landmark/loose_landmark_train.csv       NAME_ID,P1X,P1Y,...,P5X,P5Y (eyes, nose, mouth corners)

Labels are identity indices (identities sorted by folder name, as torchvision's ImageFolder and
MAFER's cross-resolution code number them). A face is cropped from its loose box (VGGFace2's own,
the crop the released models were trained on); an image with no box row falls back to the
detector. Refused and reported: a CSV row naming a path outside `<split>/`, a box with no image,
a box that does not parse; images that fail to decode or boxes outside the image are refused at
extraction (mrfer.data.identities).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator

from mrfer.data.datasets.registry import register
from mrfer.data.records import Record, SkipLog, inside, require_dir
from mrfer.errors import DatasetError

SPLITS = ("train", "test")


def read_boxes(path: Path, split: str, skips: SkipLog) -> dict[str, tuple[int, int, int, int]]:
    """NAME_ID -> (x, y, w, h) from loose_bb_<split>.csv; bad rows are reported."""
    if not path.is_file():
        return {}
    boxes = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"NAME_ID", "X", "Y", "W", "H"} <= set(reader.fieldnames):
            raise DatasetError(f"{path}: expected the header NAME_ID,X,Y,W,H, got {reader.fieldnames}")
        for line_no, row in enumerate(reader, start=2):
            name = (row["NAME_ID"] or "").strip()
            source = f"{path.name}:{line_no}"
            if inside(Path(split), name) is None or name.count("/") != 1:
                skips.add(source, f"path escapes the dataset root: {name[:80]} is not <identity>/<image> in {split}/")
                continue
            try:
                x, y, w, h = (int(float(row[k])) for k in "XYWH")
            except (TypeError, ValueError):
                skips.add(source, f"bad box: {[row.get(k) for k in 'XYWH']} for {name}")
                continue
            if w <= 0 or h <= 0:
                skips.add(source, f"bad box: empty ({w}x{h}) for {name}")
                continue
            boxes[name] = (x, y, w, h)
    return boxes


@register("vggface2", task="identity", choices={"split": SPLITS + ("both",)}, split="train")
def read_vggface2(root: Path, options: dict, skips: SkipLog) -> Iterator[Record]:
    """VGGFace2: identity folders under train/ (and test/), boxes from bb_landmark/loose_bb_*.csv."""
    require_dir(root, "VGGFace2 folder")
    splits = SPLITS if options["split"] == "both" else (options["split"],)
    identities = sorted({p.name for s in splits if (root / s).is_dir() for p in (root / s).iterdir() if p.is_dir()})
    if not identities:
        raise DatasetError(f"{root}: no identity folders under {' or '.join(s + '/' for s in splits)}")
    index = {name: i for i, name in enumerate(identities)}
    for split in splits:
        boxes = read_boxes(root / "bb_landmark" / f"loose_bb_{split}.csv", split, skips)
        found = set()
        for path in sorted((root / split).glob("*/*.jpg")) if (root / split).is_dir() else []:
            name = f"{path.parent.name}/{path.stem}"
            found.add(name)
            yield Record(image=path, label=index[path.parent.name], source=f"{split}/{name}.jpg",
                         subject=path.parent.name, split=split, box=boxes.get(name))
        for name in sorted(set(boxes) - found):
            skips.add(f"{split}/{name}.jpg", f"missing file: {split}/{name}.jpg (listed in loose_bb_{split}.csv)")
