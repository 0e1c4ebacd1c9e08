"""extract: a dataset (any registered reader) -> aligned face array + manifest + skip report."""
from __future__ import annotations

import csv
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import Field, ValidationInfo, field_validator
from tqdm import tqdm

from mrfer.config import Section
from mrfer.data import datasets, detect, labels
from mrfer.data.faces import COLORS, NO_FACE_MODES, extract_face
from mrfer.data.records import DUPLICATE_FIELDS, Record, SkipLog
from mrfer.data.shards import load_array, read_manifest, write_manifest
from mrfer.errors import DatasetError, ImageError, InputError
from mrfer.io import atomic_path, create_npy, shrink_npy, write_json

log = logging.getLogger(__name__)


class CropParams(Section):
    """`extract`: how every dataset's faces are cropped (shared, so every model reads every dataset)."""

    size: int = Field(ge=32, description="face crop side in pixels, the model input size (models need >= 32)")
    color: Literal[COLORS] = Field(description=" | ".join(COLORS))
    margin: float = Field(ge=0, le=1, description="crop margin around the landmarks/box, per side, as a fraction")
    contempt: Literal[labels.CONTEMPT_MODES] = Field(description="drop | keep (as an 8th class)")
    no_face: Literal[NO_FACE_MODES] = Field(description="when the detector finds no face: skip | center "
                                            "(keep the centre crop)")
    detector: Literal[detect.DETECTORS] = Field(description="for faces without given landmarks or box: "
                                                "retinaface (RetinaFace + 5 points, eyes levelled) | landmarks68 "
                                                "(dlib HOG + 68 points, eyes levelled) | dlib_cnn (dlib MMOD CNN "
                                                "+ 68 points) | haar (opencv cascade, box only)")


class ExtractParams(CropParams):
    """`datasets.<name>`: one FER dataset (reader, folder, options), cropped as `extract` says."""

    inherits = ("extract",)

    reader: str = Field(description="a registered reader: " + " | ".join(datasets.available()))
    root: str = Field(min_length=1, description="the dataset's folder, in its official layout")
    options: dict[str, Any] = Field(description="the reader's own options; one left out takes the reader's default")

    @field_validator("reader")
    @classmethod
    def _known_reader(cls, name: str) -> str:
        if name not in datasets.available():
            raise ValueError(f"not a registered reader (known: {', '.join(datasets.available())})")
        return name

    @field_validator("options")
    @classmethod
    def _reader_takes_options(cls, options: dict, info: ValidationInfo) -> dict:
        if "reader" in info.data:
            datasets.check_options(info.data["reader"], options)
        return options


def face_or_skip(record: Record, cfg: ExtractParams, skips: SkipLog) -> tuple[np.ndarray | None, str]:
    """The record's face cropped by the extract settings, or None with the reason added to `skips`."""
    try:
        face, located = extract_face(record, cfg.size, cfg.margin, cfg.color, cfg.no_face, cfg.detector)
    except ImageError as e:
        face, located = None, str(e)
    if face is None:
        skips.add(record.source, located)
    return face, located


def write_duplicates(path: str | os.PathLike, rows: list[dict]) -> None:
    """The reader's list of repeated images as CSV (DUPLICATE_FIELDS), a header alone if none."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=DUPLICATE_FIELDS, extrasaction="raise")
            writer.writeheader()
            writer.writerows(rows)


def extract(cfg: ExtractParams, out_dir: str | os.PathLike, report_path: str | os.PathLike,
            duplicates_path: str | os.PathLike) -> dict:
    """Read, localise, crop and align every face; write `faces.npy` + `manifest.csv` atomically,
    the report, and the list of repeated images (counted in the report) at `duplicates_path`."""
    records, skips = datasets.read(cfg.reader, cfg.root, cfg.options)
    classes = labels.class_names(cfg.contempt)
    channels = 1 if cfg.color == "gray" else 3
    size = cfg.size
    rows: list[dict] = []
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        # blocks reserved up front (a full disk: one line here, not a SIGBUS mid-way), then cut
        # in place to the faces kept (no second copy on disk)
        faces = create_npy(tmp / "faces.npy", (len(records), size, size, channels))
        for record in tqdm(records, desc=f"extract {cfg.reader}", unit="face", mininterval=2):
            if record.label >= len(classes):
                skips.add(record.source, "contempt dropped: extract.contempt is 'drop'")
                continue
            face, located = face_or_skip(record, cfg, skips)
            if face is None:
                continue
            faces[len(rows)] = face
            rows.append({"source": record.source, "label": record.label,
                         "class": classes[record.label], "subject": record.subject,
                         "sequence": record.sequence, "frame": record.frame,
                         "source_split": record.split, "located": located})
        if not rows:
            raise DatasetError(f"{cfg.root}: no face could be extracted ({len(skips)} skipped: "
                               f"{skips.reasons()})")
        faces.flush()
        del faces
        shrink_npy(tmp / "faces.npy", len(rows))
        write_manifest(tmp / "manifest.csv", rows)
    counts = Counter(r["class"] for r in rows)
    report = {
        "reader": cfg.reader, "root": str(cfg.root), "faces": len(rows),
        "classes": list(classes), "per_class": {c: counts.get(c, 0) for c in classes},
        "located": dict(Counter(r["located"] for r in rows)),
        "subjects": len({r["subject"] for r in rows if r["subject"]}),
        "skipped": len(skips), "skipped_by_reason": skips.reasons(),
    }
    if skips.duplicates is not None:   # only readers that look for duplicates report them
        report["duplicates"] = skips.duplicate_summary()
        log.info("duplicates: %(images)d images repeat an earlier one, %(across_splits)d across "
                 "splits, %(dropped_from_eval)d dropped from val/test", report["duplicates"])
    report.update(skips=skips.items, notes=skips.notes)
    write_duplicates(duplicates_path, skips.duplicates or [])
    write_json(report_path, report)
    log.info("extracted %d faces, skipped %d (%s)", len(rows), len(skips), skips.reasons())
    return report


def export_folders(extracted_dir: str | os.PathLike, out_dir: str | os.PathLike) -> int:
    """Write extracted faces as `out_dir/<class>/<name>.png` for people to look at."""
    extracted_dir = Path(extracted_dir)
    faces = load_array(extracted_dir / "faces.npy")
    rows = read_manifest(extracted_dir / "manifest.csv")
    if len(faces) != len(rows):
        raise InputError(f"{extracted_dir}: faces.npy has {len(faces)} faces but manifest.csv has "
                         f"{len(rows)} rows; re-run extract")
    with atomic_path(out_dir) as tmp:
        for i, (face, row) in enumerate(zip(faces, rows)):
            folder = tmp / row["class"]
            folder.mkdir(parents=True, exist_ok=True)
            name = Path(row["source"]).stem.replace(os.sep, "_") or f"row{i}"
            image = face[:, :, 0] if face.shape[2] == 1 else cv2.cvtColor(np.asarray(face), cv2.COLOR_RGB2BGR)
            cv2.imwrite(str(folder / f"{i:06d}_{name}.png"), image)
    return len(rows)
