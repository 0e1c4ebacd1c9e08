"""CASIA-WebFace (face recognition, 10,575 identities, 494,414 images) as distributed.

    CASIA-WebFace/0000045/001.jpg        <identity id>/<nnn>.jpg, 250x250, the face roughly centred

Labels are identity indices (folders sorted by name). The set ships no boxes: `faces: detect`
finds the face (the detector), `faces: whole` takes the whole 250x250 image as the face (the
usual practice with its roughly centred crops). Paths come from listing the folders (no list
file names them), so none can point outside the root.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from mrfer.data.datasets.registry import register
from mrfer.data.faces import IMAGE_SUFFIXES
from mrfer.data.records import Record, SkipLog, require_dir
from mrfer.errors import DatasetError


@register("casia_webface", task="identity", choices={"faces": ("detect", "whole")}, faces="detect")
def read_casia_webface(root: Path, options: dict, skips: SkipLog) -> Iterator[Record]:
    """CASIA-WebFace: <identity>/<nnn>.jpg, no boxes."""
    require_dir(root, "CASIA-WebFace folder")
    base = root / "CASIA-WebFace" if (root / "CASIA-WebFace").is_dir() else root
    identities = sorted(p.name for p in base.iterdir() if p.is_dir())
    if not identities:
        raise DatasetError(f"{base}: no identity folders (<id>/<nnn>.jpg)")
    for label, identity in enumerate(identities):
        for path in sorted((base / identity).iterdir()):
            rel = path.relative_to(root).as_posix()
            if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
                skips.add(rel, "not an image file")
            else:
                yield Record(image=path, label=label, source=rel, subject=identity,
                             aligned=options["faces"] == "whole")
