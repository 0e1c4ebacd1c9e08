"""JAFFE (Japanese Female Facial Expression database) as distributed (`jaffedbase/`).

    KA.AN1.39.tiff      <subject>.<expression code><pose index>.<image number>.tiff
    NA.HA1.202.tiff

213 gray 256x256 photos of 10 subjects (KA KL KM KR MK NA NM TM UY YM). Expression codes:
AN angry, DI disgust, FE fear, HA happy, NE neutral, SA sad, SU surprise. The files lie in
the root or in one sub-folder (the archive unpacks to jaffedbase/); the same names with
another image extension (.jpg .png .tif .bmp, any case) are accepted, e.g. converted copies.
When one image appears twice (a .tiff and a converted .png), the .tiff is used, the copy reported.
Other image files, e.g. macOS `._KA.AN1.39.tiff` metadata, are skipped and reported; files
that are not images (README) are ignored. The photos are not cropped: the extractor detects
the face.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from mrfer.data import labels
from mrfer.data.datasets.registry import register
from mrfer.data.faces import IMAGE_SUFFIXES
from mrfer.data.records import Record, SkipLog, require_dir

NAME_RE = re.compile(r"^([A-Z]{2})\.([A-Z]{2})(\d+)\.(\d+)\.[A-Za-z]+$", re.IGNORECASE)


def image_files(root: Path) -> list[Path]:
    """Image files in root and its direct sub-folders, sorted; an original .tiff before its copies."""
    candidates = list(root.glob("*")) + list(root.glob("*/*"))
    files = [p for p in candidates if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=lambda p: (p.parent, p.stem, p.suffix.lower() not in (".tiff", ".tif"), p.name))


@register("jaffe")
def read_jaffe(root: Path, options: dict, skips: SkipLog) -> Iterator[Record]:
    """JAFFE: subject and expression from file names like KA.AN1.39.tiff."""
    require_dir(root, "JAFFE folder")
    seen: dict[str, str] = {}
    for path in image_files(root):
        rel = path.relative_to(root).as_posix()
        match = NAME_RE.match(path.name)
        if not match:
            skips.add(rel, "unrecognized name: expected <subject>.<code><n>.<number>.<ext>, "
                           "e.g. KA.AN1.39.tiff")
            continue
        subject, code = match.group(1).upper(), match.group(2).upper()
        label = labels.lookup(labels.JAFFE, code)
        if label is None:
            skips.add(rel, f"unknown label: expression code {code} (JAFFE codes are "
                           f"{' '.join(labels.JAFFE)})")
            continue
        image_id = path.name.rsplit(".", 1)[0].upper()
        if image_id in seen:
            skips.add(rel, f"duplicate image: {image_id} already read from {seen[image_id]}")
            continue
        seen[image_id] = rel
        yield Record(image=path, label=label, source=rel, subject=subject)
