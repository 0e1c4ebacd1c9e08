"""A second embedded FER dataset, in FER2013's CSV layout, that differs from the synthetic CK+ the
way real datasets differ from each other: other people, a 48 px gray crop of the face (FER2013's
alignment: a loose box, no landmarks), harder light, pose and noise, weaker expressions, and a
split by image (Training / PublicTest / PrivateTest), as FER2013 has no subjects.

`fer2013.csv` (emotion,pixels,Usage) is what the `fer2013` reader reads, so the cross-dataset
evaluation of the default graph runs on embedded data.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from mrfer.data.synthetic import FerCsvParams, make_identity, sequence_frames
from mrfer.io import atomic_path

FER_STREAM = 2_000_003   # subjects draw from [seed, this, index, ...]: people of neither other set
SIDE = 48                # FER2013's face side
CKPLUS_TO_FER2013 = {1: 0, 3: 1, 4: 2, 5: 3, 6: 4, 7: 5}   # CK+ code -> FER2013 code (6: neutral)
NEUTRAL = 6
USAGE = (("Training", 0.7), ("PublicTest", 0.15), ("PrivateTest", 0.15))


def face_crop(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """FER2013-style: a square box around the landmarks with some forehead, resized to 48 px."""
    lo, hi = points.min(0), points.max(0)
    side = 1.25 * max(hi - lo)
    cx, cy = (lo + hi) / 2 - [0, 0.08 * side]
    h, w = image.shape
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    x1, y1 = x0 + int(round(side)), y0 + int(round(side))
    padded = cv2.copyMakeBorder(image, max(0, -y0), max(0, y1 - h), max(0, -x0), max(0, x1 - w), cv2.BORDER_REPLICATE)
    crop = padded[y0 + max(0, -y0): y1 + max(0, -y0), x0 + max(0, -x0): x1 + max(0, -x0)]
    return cv2.resize(crop, (SIDE, SIDE), interpolation=cv2.INTER_AREA)


def subject_rows(seed: int, index: int, cfg: FerCsvParams) -> list[tuple[int, np.ndarray]]:
    """(FER2013 code, 48x48 uint8 face) of one subject's images, every class `images_per_class` times."""
    ident = make_identity(np.random.default_rng([seed, FER_STREAM, index]))
    rows = []
    for code in [*CKPLUS_TO_FER2013, None]:   # None: neutral
        for j in range(cfg.images_per_class):
            rng = np.random.default_rng([seed, FER_STREAM, index, code or 0, j + 1])
            intensity = cfg.apex_intensity * float(rng.uniform(0.5, 1.0))
            frames = sequence_frames(ident, code or 5, 2, rng, cfg.image_size, cfg.difficulty, intensity)
            image, points = frames[0 if code is None else 1]
            rows.append((NEUTRAL if code is None else CKPLUS_TO_FER2013[code], face_crop(image, points)))
    return rows


def write_fer_csv(out: str | os.PathLike, cfg: FerCsvParams, seed: int) -> dict:
    """Write `out/fer2013.csv` atomically; every image's Usage drawn by image (FER2013 has no
    subjects). Returns a summary."""
    rows = [row for index in range(cfg.subjects) for row in subject_rows(seed, index, cfg)]
    rng = np.random.default_rng([seed, FER_STREAM])
    usage = rng.choice([u for u, _ in USAGE], size=len(rows), p=[p for _, p in USAGE])
    lines = ["emotion,pixels,Usage"] + [f"{code},{' '.join(map(str, face.ravel()))},{use}"
                                        for (code, face), use in zip(rows, usage)]
    with atomic_path(out) as tmp:
        tmp.mkdir()
        (Path(tmp) / "fer2013.csv").write_text("\n".join(lines) + "\n")
    return {"subjects": cfg.subjects, "images": len(rows),
            "usage": {u: int((usage == u).sum()) for u, _ in USAGE}}
