"""A synthetic face-recognition set in VGGFace2's on-disk layout, for MAFER's identity steps.

    train/n000001/0001_01.jpg                 <image number>_<face number>.jpg, one folder per identity
    bb_landmark/loose_bb_train.csv            NAME_ID,X,Y,W,H            (NAME_ID = n000001/0001_01)
    bb_landmark/loose_landmark_train.csv      NAME_ID,P1X,P1Y,...,P5X,P5Y (eyes, nose tip, mouth corners)

Identities come from the same face generator as the FER set (mrfer.data.synthetic) but from a
seed stream the FER subjects never use, so the two sets share no person. Each image shows its
identity with a random expression (or none) at a random intensity, head pose, light and
background: face recognition must learn identity despite expression, as on VGGFace2.
"""
from __future__ import annotations

import csv
import io
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from mrfer.data.synthetic import EXPRESSIONS, IdentitiesParams, make_identity, sequence_frames

IDENTITY_STREAM = 1_000_003   # FER subjects draw from [seed, index, ...]; identities from [seed, this, index, ...]
NEUTRAL = 0


def five_points(points: np.ndarray) -> np.ndarray:
    """VGGFace2's 5 landmarks from 68 iBUG points: eye centres, nose tip, mouth corners."""
    return np.stack([points[36:42].mean(0), points[42:48].mean(0), points[30], points[48], points[54]])


def loose_box(points: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """A loose box around the landmarks (forehead included, as VGGFace2's boxes), inside the image."""
    lo, hi = points.min(0), points.max(0)
    w, h = hi - lo
    x0, y0 = max(0.0, lo[0] - 0.15 * w), max(0.0, lo[1] - 0.35 * h)
    x1, y1 = min(width - 1.0, hi[0] + 0.15 * w), min(height - 1.0, hi[1] + 0.1 * h)
    return int(round(x0)), int(round(y0)), int(round(x1 - x0)), int(round(y1 - y0))


def identity_images(seed: int, index: int, n_images: int, image_size: tuple[int, int],
                    difficulty: float) -> list[tuple[bytes, tuple, np.ndarray]]:
    """One identity's images: (JPEG bytes, loose box, 5 landmarks) each. Runs in a worker."""
    ident = make_identity(np.random.default_rng([seed, IDENTITY_STREAM, index]))
    out = []
    for j in range(n_images):
        rng = np.random.default_rng([seed, IDENTITY_STREAM, index, j + 1])
        code = int(rng.choice([NEUTRAL, *EXPRESSIONS]))
        intensity = float(rng.uniform(0.3, 1.0))
        # A two-frame sequence ends on the expression at `intensity`; neutral images keep frame 0.
        frames = sequence_frames(ident, code or 5, 2, rng, image_size, difficulty, intensity)
        image, points = frames[0 if code == NEUTRAL else 1]
        ok, jpg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])
        if not ok:
            raise OSError(f"could not encode identity {index} image {j}")
        out.append((jpg.tobytes(), loose_box(points, *image_size), five_points(points)))
    return out


def csv_text(header: list[str], rows: list[list]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def write_identities(root: Path, cfg: IdentitiesParams, seed: int, difficulty: float,
                     workers: int | None = None) -> dict:
    """Write the set under `root` (which must not exist yet); return a summary."""
    (root / "train").mkdir(parents=True)
    (root / "bb_landmark").mkdir()
    workers = workers or len(os.sched_getaffinity(0))
    args = [(seed, i, cfg.images_per_subject, tuple(cfg.image_size), difficulty) for i in range(cfg.subjects)]
    boxes, marks = [], []
    with ProcessPoolExecutor(workers) as pool:
        for i, images in enumerate(pool.map(identity_images, *zip(*args))):
            folder = root / "train" / f"n{i + 1:06d}"
            folder.mkdir()
            for j, (jpg, box, points) in enumerate(images, start=1):
                name = f"n{i + 1:06d}/{j:04d}_01"
                (root / "train" / f"{name}.jpg").write_bytes(jpg)
                boxes.append([name, *box])
                marks.append([name, *(f"{v:.3f}" for v in points.ravel())])
    (root / "bb_landmark/loose_bb_train.csv").write_text(csv_text(["NAME_ID", "X", "Y", "W", "H"], boxes))
    points = [f"P{k}{a}" for k in range(1, 6) for a in "XY"]
    (root / "bb_landmark/loose_landmark_train.csv").write_text(csv_text(["NAME_ID", *points], marks))
    return {"identities": cfg.subjects, "images": len(boxes)}
