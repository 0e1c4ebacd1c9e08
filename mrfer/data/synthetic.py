"""Synthetic faces written in the exact on-disk layout of CK+ (the embedded default dataset).

Every face is drawn from 68 iBUG landmarks that are first placed for a subject's identity,
then moved by facial action units (AUs) for the expression, then mapped to pixels by a head
pose. The landmark files are those drawn points, so they always match the image.

The expression cues are deliberately fine-scale (eyelids, lip corners, thin wrinkles a few
pixels wide on a 64 px face crop) while coarse geometry differs only a little and overlaps
with identity variation, so accuracy drops when faces are seen at low resolution.

    cohn-kanade-images/S005/001/S005_001_00000001.png   8-bit grayscale frames, neutral -> apex
    Emotion/S005/001/S005_001_000000NN_emotion.txt      CK+ code of the sequence (if labelled)
    Landmarks/S005/001/S005_001_000000NN_landmarks.txt  68 "x y" lines per frame

`layout: zips` writes these folders inside the three zips CK+ is distributed as
(extended-cohn-kanade-images.zip, Emotion_labels.zip, Landmarks.zip), so DVC tracks three files
instead of ~10k; `layout: folders` writes them extracted. The zips extract to exactly the folders.

Everything is deterministic given the seed; subject k only depends on (seed, k), so adding
subjects never changes the earlier ones, and the zips are the same bytes on every run.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import zipfile
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import cv2
import numpy as np
from pydantic import Field, field_validator
from tqdm import tqdm

from mrfer.config import Section
from mrfer.data.labels import CKPLUS
from mrfer.io import atomic_path

log = logging.getLogger(__name__)

Side = Annotated[int, Field(ge=32)]
Fraction = Annotated[float, Field(ge=0, le=1)]
LAYOUTS = ("zips", "folders")
# The folder each of CK+'s zips holds -> the zip's name as distributed (mrfer.data.datasets.ckplus reads both).
ARCHIVES = {"cohn-kanade-images": "extended-cohn-kanade-images.zip", "Emotion": "Emotion_labels.zip",
            "Landmarks": "Landmarks.zip"}
ZIP_TIME = (1980, 1, 1, 0, 0, 0)   # the earliest a zip can say: no build time in the bytes


class IdentitiesParams(Section):
    """`synthesize.identities`: the face-recognition set in VGGFace2's layout (synthetic_identities.py)."""

    subjects: int = Field(ge=2, description="identities (none of them a FER subject)")
    images_per_subject: int = Field(ge=2, description="images of each identity")
    image_size: tuple[Side, Side] = Field(description="[width, height] of every image in pixels, each >= 32")


class FerCsvParams(Section):
    """`synthesize.fer_csv`: the second synthetic FER set (datasets.synthetic_fer), FER2013's CSV layout."""

    subjects: int = Field(ge=1, description="people (none of them in the CK+ set or the identities)")
    images_per_class: int = Field(ge=1, description="images of each subject per class (7 classes)")
    image_size: tuple[Side, Side] = Field(description="[width, height] rendered, before the 48 px face crop")
    difficulty: Fraction = Field(description="0 easy .. 1 hard: light, pose and noise up, expressions weaker")
    apex_intensity: float = Field(gt=0, description="expression strength before difficulty and jitter")


class SynthesizeParams(Section):
    """`synthesize`: the embedded synthetic dataset (subjects, sequences, how hard it is)."""

    seed: int
    n_subjects: int = Field(ge=1, description="subjects to draw; scale the dataset up with this")
    image_size: tuple[Side, Side] = Field(description="[width, height] of every frame in pixels, each >= 32")
    frames: tuple[int, int] = Field(description="[min, max] frames per sequence (neutral first, apex last), "
                                    "2 <= min <= max")
    labelled_fraction: Fraction = Field(description="share of sequences with an Emotion file, as in CK+")
    expression_rate: Fraction = Field(description="chance a subject has a sequence of each basic expression")
    contempt_rate: Fraction = Field(description="chance a subject has a contempt sequence (rarer, as in CK+)")
    apex_intensity: float = Field(gt=0, description="action-unit intensity at the apex, before jitter and difficulty")
    difficulty: Fraction = Field(description="0 easy .. 1 hard: nuisance strength up, expression strength down")
    layout: Literal[LAYOUTS] = Field(description="zips: CK+'s three zips as distributed (DVC tracks 3 files, "
                                     "not ~10k) | folders: the same files extracted")
    identities: IdentitiesParams
    fer_csv: FerCsvParams

    @field_validator("frames")
    @classmethod
    def _min_max(cls, frames: tuple[int, int]) -> tuple[int, int]:
        if not 2 <= frames[0] <= frames[1]:
            raise ValueError("must be [min, max] with 2 <= min <= max")
        return frames


# CK+ emotion code -> action units (AU number -> weight at full intensity).
EXPRESSIONS: dict[int, dict[int, float]] = {
    1: {4: 1.0, 7: 1.0, 24: 1.0},                   # anger: brow lower, lid tighten, lip press
    2: {14: 1.0},                                   # contempt: one-sided dimpler
    3: {9: 1.0, 10: 1.0},                           # disgust: nose wrinkle, upper lip raise
    4: {1: 1.0, 2: 0.8, 4: 0.7, 5: 1.0, 20: 1.0},   # fear
    5: {6: 1.0, 12: 1.0},                           # happy: cheek raise, lip corner pull
    6: {1: 1.0, 4: 0.6, 15: 1.0},                   # sadness
    7: {1: 1.0, 2: 1.0, 5: 1.0, 26: 1.0},           # surprise: brows, lids up, jaw drop
}
CONTEMPT = 2

CREASE_WIDTH = 0.03  # canonical units: ~1 px on a 64 px face crop, gone at 8 px
FACE_SCALE = 0.27   # canonical unit (half face width) in pixels, as a share of min(width, height)


@dataclass(frozen=True)
class Identity:
    """One subject's face, in canonical units (half face width ~ 1, origin near the nose, y down)."""
    face_w: float
    chin_y: float
    jaw_power: float        # < 1 square jaw, > 1 pointed chin
    skin: int
    eye_dx: float           # half distance between the eye centres
    eye_y: float
    eye_w: float
    eye_open: float
    brow_gap: float
    brow_thick: float
    brow_arch: float
    brow_tilt: float        # resting inner-brow height: a confound for AU1 / AU4
    brow_dark: int
    nose_y: float
    nose_w: float
    mouth_y: float
    mouth_w: float
    lip_up: float
    lip_lo: float
    mouth_curve: float      # resting corner height: a confound for AU12 / AU15
    lip_dark: int
    fold_depth: float       # resting nasolabial fold darkness (age)
    hair_dark: int
    hairline: float
    hair_volume: float
    long_hair: bool
    glasses: bool
    glasses_radius: float
    background: int
    contempt_side: int      # which lip corner AU14 pulls (-1 image left, +1 image right)


def make_identity(rng: np.random.Generator) -> Identity:
    u = rng.uniform
    skin = int(u(105, 205))
    return Identity(
        face_w=u(0.92, 1.08), chin_y=u(1.12, 1.32), jaw_power=u(0.75, 1.25), skin=skin,
        eye_dx=u(0.37, 0.45), eye_y=u(-0.38, -0.28), eye_w=u(0.13, 0.16), eye_open=u(0.045, 0.065),
        brow_gap=u(0.15, 0.21), brow_thick=u(0.035, 0.065), brow_arch=u(0.02, 0.07),
        brow_tilt=u(-0.03, 0.03), brow_dark=int(u(55, 100)),
        nose_y=u(0.12, 0.22), nose_w=u(0.14, 0.19),
        mouth_y=u(0.56, 0.68), mouth_w=u(0.26, 0.34), lip_up=u(0.035, 0.06), lip_lo=u(0.045, 0.075),
        mouth_curve=u(-0.025, 0.025), lip_dark=int(u(20, 50)), fold_depth=u(0.0, 0.25),
        hair_dark=int(u(15, 110)), hairline=u(-0.95, -0.84), hair_volume=u(0.05, 0.25),
        long_hair=bool(rng.random() < 0.4), glasses=bool(rng.random() < 0.2),
        glasses_radius=u(0.17, 0.22), background=int(u(40, 215)),
        contempt_side=int(rng.choice([-1, 1])),
    )


def landmarks(ident: Identity, au: dict[int, float]) -> np.ndarray:
    """The 68 iBUG points (canonical units) of `ident` showing action units `au` (0..1)."""
    a = lambda n: au.get(n, 0.0)  # noqa: E731
    pts = np.zeros((68, 2))

    # Jaw 0..16 from the image-left ear round the chin; AU26 drops the chin.
    jaw_top = ident.eye_y + 0.06
    phi = np.linspace(0, np.pi, 17)
    c = np.cos(phi)
    pts[0:17, 0] = -ident.face_w * np.sign(c) * np.abs(c) ** ident.jaw_power
    pts[0:17, 1] = jaw_top + (ident.chin_y - jaw_top) * np.sin(phi) + 0.09 * a(26) * np.sin(phi) ** 4

    # Brows 17..21 (image left, outer -> inner) and 22..26 (inner -> outer).
    inner = np.array([0.0, 0.2, 0.5, 0.8, 1.0])   # how much each point belongs to the inner brow
    span = np.array([-1.2, -0.65, -0.1, 0.45, 0.95])
    for side, idx in ((-1, np.arange(17, 22)), (1, np.arange(26, 21, -1))):
        cx = side * ident.eye_dx
        x = cx - side * span * ident.eye_w * 1.25
        y = (ident.eye_y - ident.eye_open - ident.brow_gap
             - ident.brow_arch * (1 - ((span + 0.1) / 1.1) ** 2) - ident.brow_tilt * inner)
        y = y - 0.075 * a(1) * inner - 0.07 * a(2) * (1 - inner) + 0.06 * a(4) * (0.4 + 0.6 * inner)
        y = y + 0.02 * a(9) * inner
        x = x - side * 0.045 * a(4) * inner       # AU4 draws the brows together
        pts[idx] = np.stack([x, y], 1)

    # Nose: bridge 27..30, base 31..35; AU9 lifts the wings.
    pts[27:31, 0] = 0.0
    pts[27:31, 1] = np.linspace(ident.eye_y, ident.nose_y, 4)
    base = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    pts[31:36, 0] = base * ident.nose_w * (1 + 0.1 * a(9))
    pts[31:36, 1] = ident.nose_y + 0.05 + 0.03 * (1 - base ** 2) - 0.03 * a(9) * np.abs(base)

    # Eyes 36..41 (image left: outer, upper x2, inner, lower x2) and 42..47 (mirror).
    up = ident.eye_open + 0.032 * a(5) - 0.012 * a(4) - 0.008 * a(7)
    lo = ident.eye_open * 0.8 - 0.018 * a(6) - 0.026 * a(7) - 0.008 * a(9)
    lx = np.array([-1.0, -0.35, 0.3, 1.0, 0.3, -0.35])
    ly = np.array([0.0, -up, -up, 0.005, lo, lo])
    pts[36:42] = np.stack([-ident.eye_dx + lx * ident.eye_w, ident.eye_y + ly], 1)
    pts[[45, 44, 43, 42, 47, 46]] = np.stack([ident.eye_dx - lx * ident.eye_w, ident.eye_y + ly], 1)

    # Mouth: outer 48..59, inner 60..67. f is the position along the mouth (-1 left corner).
    f_out = np.array([-1, -0.6, -0.25, 0, 0.25, 0.6, 1, 0.6, 0.25, 0, -0.25, -0.6])
    f_in = np.array([-0.85, -0.4, 0, 0.4, 0.85, 0.4, 0, -0.4])
    half_w = ident.mouth_w * (1 + 0.2 * a(20) + 0.12 * a(12) - 0.08 * a(24))
    thin = 1 - 0.4 * a(24) - 0.3 * a(20)
    up_profile = np.array([0, 0.7, 1.0, 0.85, 1.0, 0.7, 0])
    lo_profile = np.array([0.7, 0.95, 1.0, 0.95, 0.7])
    open_up = 0.012 * a(10) + 0.006 * a(12)
    open_lo = 0.10 * a(26)

    def line_y(f: np.ndarray) -> np.ndarray:
        """Height of the lip line at f: resting curve plus corner AUs, which fade towards the middle."""
        w = np.abs(f) ** 1.5
        y = ident.mouth_y + ident.mouth_curve * f ** 2
        y = y + w * (-0.07 * a(12) + 0.065 * a(15) + 0.012 * a(20))
        side = np.sign(f) == ident.contempt_side
        return y - w * side * 0.05 * a(14)

    def line_x(f: np.ndarray) -> np.ndarray:
        side = np.sign(f) == ident.contempt_side
        return f * half_w - np.sign(f) * np.abs(f) ** 2 * side * 0.03 * a(14)

    raise_up = 0.035 * a(10) * (1 - 0.5 * np.abs(f_out[:7]))
    pts[48:55, 0] = line_x(f_out[:7])
    pts[48:55, 1] = line_y(f_out[:7]) - open_up - ident.lip_up * thin * up_profile - raise_up
    pts[55:60, 0] = line_x(f_out[7:])
    pts[55:60, 1] = line_y(f_out[7:]) + open_lo + ident.lip_lo * thin * lo_profile
    pts[60:68, 0] = line_x(f_in)
    gap_up = np.array([0, 1, 1, 1, 0, 0, 0, 0])
    gap_lo = np.array([0, 0, 0, 0, 0, 1, 1, 1])
    center = 1 - np.abs(f_in) ** 2
    pts[60:68, 1] = (line_y(f_in) - gap_up * center * (open_up + 0.035 * a(10))
                     + gap_lo * center * open_lo)
    return pts


# ---------------------------------------------------------------------------------------------
# Drawing. Every shape is a polygon or polyline in canonical units mapped through the 2x3 pose
# matrix, so the drawing and the landmarks share one geometry.

SHIFT = 4  # sub-pixel bits for cv2 drawing
Shape = tuple[np.ndarray, float, float | None]   # points (canonical), gray level, line width or None = filled
_T = np.linspace(0, 1, 8)[:, None]               # parameter of every quadratic curve


def to_pixels(pts: np.ndarray, pose: np.ndarray) -> np.ndarray:
    pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    return pts @ pose[:, :2].T + pose[:, 2]


def _ellipse(cx: float, cy: float, ax: float, ay: float, n: int = 32, a0: float = 0.0,
             a1: float = 2 * np.pi) -> np.ndarray:
    t = np.linspace(a0, a1, n)
    return np.stack([cx + ax * np.cos(t), cy + ay * np.sin(t)], 1)


def _curve(p0, p1, bend: float) -> np.ndarray:
    """Quadratic curve from p0 to p1 bulging by `bend` (units) to the left of the direction."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    d = p1 - p0
    mid = (p0 + p1) / 2 + bend * np.array([d[1], -d[0]]) / (np.hypot(*d) + 1e-9)
    return (1 - _T) ** 2 * p0 + 2 * _T * (1 - _T) * mid + _T ** 2 * p1


def render(img: np.ndarray, shapes: list[Shape], pose: np.ndarray) -> None:
    """Draw shapes in order onto uint8 `img`; all points go through the pose in one product."""
    scale = float(np.hypot(*pose[:, 0]))
    points = np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1, 2) for p, _, _ in shapes])
    pixels = np.round(to_pixels(points, pose) * (1 << SHIFT)).astype(np.int32)
    ends = np.cumsum([len(p) for p, _, _ in shapes])[:-1]
    for (_, color, width), p in zip(shapes, np.split(pixels, ends)):
        gray = int(min(255.0, max(0.0, color)))
        if width is None:
            cv2.fillPoly(img, [p], gray, cv2.LINE_AA, SHIFT)
        else:
            cv2.polylines(img, [p], False, gray, max(1, round(width * scale)), cv2.LINE_AA, SHIFT)


@functools.lru_cache(maxsize=4)
def _head_shapes(ident: Identity) -> tuple[list[Shape], np.ndarray, list[Shape]]:
    """What does not move with the expression: hair, neck, ears; the skull arc; hair cap and glasses."""
    skin, hair, vol, w = ident.skin, ident.hair_dark, ident.hair_volume, ident.face_w
    jaw_top = ident.eye_y + 0.06
    behind: list[Shape] = [(_ellipse(0, -0.3, w + 0.1 + vol, 1.02 + vol), hair, None)]
    if ident.long_hair:
        behind.append((np.array([(-w - 0.1 - vol, -0.3), (w + 0.1 + vol, -0.3),
                                 (w + 0.2 + vol, 1.1), (-w - 0.2 - vol, 1.1)]), hair, None))
    behind.append((np.array([(-0.45, 0.7), (0.45, 0.7), (0.5, 3.0), (-0.5, 3.0)]), skin * 0.85, None))
    for side in (-1, 1):
        behind.append((_ellipse(side * w, jaw_top + 0.12, 0.08, 0.17, 16), skin * 0.9, None))
    skull = _ellipse(0, jaw_top, w, 1.05, 24, np.pi, 2 * np.pi)[::-1][1:-1]   # right -> top -> left

    # Hair cap above a hairline that curves down at the temples; glasses follow the head only.
    hx = np.linspace(-w - 0.05, w + 0.05, 12)
    hairline = np.stack([hx, ident.hairline + 0.32 * (hx / w) ** 2], 1)
    cap = _ellipse(0, jaw_top, w + 0.06, 1.12, 20, 0, -np.pi)
    front: list[Shape] = [(np.concatenate([hairline, cap]), hair, None)]
    if ident.glasses:
        r, dx, y = ident.glasses_radius, ident.eye_dx, ident.eye_y
        glasses = [(_ellipse(side * dx, y + 0.01, r, r * 0.75, 28), 25.0, 0.02) for side in (-1, 1)]
        front_glasses = glasses + [(np.array([(-dx + r, y), (dx - r, y)]), 25.0, 0.02)]
    else:
        front_glasses = []
    return behind, skull, front + front_glasses


def face_shapes(ident: Identity, au: dict[int, float], pts: np.ndarray, wrinkle: float) -> list[Shape]:
    """Everything to draw for `ident` with landmarks `pts` (canonical units), back to front.

    `wrinkle` scales how dark the thin expression lines are (the fine-scale cues).
    """
    a = lambda n: au.get(n, 0.0)  # noqa: E731
    skin = ident.skin
    behind, skull, front = _head_shapes(ident)
    shapes = list(behind)
    shapes.append((np.concatenate([pts[0:17], skull]), skin, None))
    shapes.append(front[0])  # hair cap

    def crease(line, depth: float) -> None:
        """A thin expression line: the fine-scale cue, stronger with the AU intensity.

        A furrow's shadow beside its lit ridge: the two nearly cancel once averaged over a
        low-resolution pixel, so the cue is only visible at fine scales.
        """
        if depth <= 0:
            return
        line = np.asarray(line, dtype=np.float64)
        d = line[-1] - line[0]
        ridge = np.array([-d[1], d[0]]) * (CREASE_WIDTH / (np.hypot(*d) + 1e-9))
        shapes.append((line + ridge, skin * (1 + 0.8 * wrinkle * depth), CREASE_WIDTH))
        shapes.append((line, skin * (1 - wrinkle * depth), CREASE_WIDTH))

    # Forehead lines between the brows and the hairline (AU1 centre, AU2 sides).
    if a(1) or a(2):
        brow_top = pts[17:27, 1].min() - ident.brow_thick
        for k in range(3):
            y = brow_top + (ident.hairline - brow_top) * (k + 1) / 4.5
            w = 0.42 - 0.05 * k
            if a(1):
                crease(_curve((-w * 0.5, y), (w * 0.5, y), 0.02), 0.4 * a(1))
            if a(2):
                for side in (-1, 1):
                    crease(_curve((side * w * 0.45, y + 0.01), (side * w, y + 0.03), 0.01 * side), 0.4 * a(2))

    # Glabella: vertical lines between the brows (AU4), horizontal ones on the nose bridge (AU9).
    if a(4):
        gy = pts[21, 1]
        for x in (-0.05, 0.05):
            crease(np.array([(x, gy - 0.03), (x * 0.8, gy + 0.1)]), 0.45 * a(4))
    if a(9):
        for k in range(3):
            y = ident.eye_y + 0.02 + 0.05 * k
            crease(_curve((-0.09, y), (0.09, y), -0.015), 0.45 * a(9))

    # Eyes: sclera, iris, lid skin over the iris outside the opening, lid lines.
    for side, idx in ((-1, [36, 37, 38, 39, 40, 41]), (1, [45, 44, 43, 42, 47, 46])):
        e = pts[idx]
        cx, cy = side * ident.eye_dx, ident.eye_y
        upper, lower = e[[0, 1, 2, 3]], e[[0, 5, 4, 3]]
        shapes += [
            (e, skin + 45, None),
            (_ellipse(cx, cy + 0.012, ident.eye_open * 0.95, ident.eye_open * 0.95, 16), 35, None),
            (np.concatenate([upper, (upper - [0, 0.1])[::-1]]), skin * 0.96, None),
            (np.concatenate([lower, (lower + [0, 0.07])[::-1]]), skin, None),
            (upper, skin * 0.35, 0.022),
            (lower, skin * 0.7, 0.01),
        ]
        # AU6: crow's feet at the outer corner and a furrow under the eye; AU7: lower-lid bulge.
        if a(6):
            for ang in (-0.45, 0.0, 0.45):
                d = np.array([side * np.cos(ang), np.sin(ang)])
                crease(np.stack([e[0] + d * 0.035, e[0] + d * 0.11]), 0.45 * a(6))
            crease(_curve((cx - 0.11, cy + 0.1), (cx + 0.11, cy + 0.1), 0.03), 0.35 * a(6))
        if a(7):
            crease(lower + [0, 0.035], 0.4 * a(7))

    # Brows: filled bands, thinner at the outer end.
    half = ident.brow_thick / 2 * np.array([0.45, 0.8, 1.0, 1.0, 0.9])[:, None] * np.array([0, 1])
    for idx in (np.arange(17, 22), np.arange(26, 21, -1)):
        shapes.append((np.concatenate([pts[idx] - half, (pts[idx] + half)[::-1]]), skin - ident.brow_dark, None))

    # Nose: side shading lines, nostrils, wings.
    shapes.append((np.stack([pts[27] + (-0.06, 0.05), pts[31] + (0.0, -0.09)]), skin * 0.9, 0.015))
    shapes.append((np.stack([pts[27] + (0.06, 0.05), pts[35] + (0.0, -0.09)]), skin * 0.9, 0.015))
    for side, wing in ((-1, pts[31]), (1, pts[35])):
        shapes.append((_ellipse(wing[0] * 0.55, wing[1], 0.035, 0.018, 12), skin * 0.45, None))
        shapes.append((_curve(wing + (0, -0.06), wing + (side * 0.01, 0.01), -side * 0.03), skin * 0.75, 0.014))

    # Nasolabial folds from the nose wing to beyond the lip corner; smiles and AU10 deepen them.
    for side, wing, corner in ((-1, pts[31], pts[48]), (1, pts[35], pts[54])):
        fold = _curve(wing + (side * 0.07, -0.02), corner + (side * 0.07, 0.04), side * 0.03)
        shapes.append((fold, skin * (1 - 0.15 * ident.fold_depth), CREASE_WIDTH))
        crease(fold, 0.35 * a(12) + 0.35 * a(10) + 0.15 * a(9))

    # Mouth: opening (dark, with upper teeth), then the lips, then the lip line.
    if (pts[66, 1] - pts[62, 1]) > 0.004:
        teeth = pts[60:65]
        lower_inner = pts[[60, 67, 66, 65, 64]]
        low = np.minimum(teeth[:, 1] + 0.045, np.interp(teeth[:, 0], lower_inner[:, 0], lower_inner[:, 1]))
        shapes.append((pts[60:68], 30, None))
        shapes.append((np.concatenate([teeth, np.stack([teeth[:, 0], low], 1)[::-1]]), 220, None))
    lip = skin - ident.lip_dark
    shapes += [
        (np.concatenate([pts[48:55], pts[[64, 63, 62, 61, 60]]]), lip, None),
        (np.concatenate([pts[[54, 55, 56, 57, 58, 59, 48]], pts[[60, 67, 66, 65, 64]]]), lip + 8, None),
        (pts[[48, 60, 61, 62, 63, 64, 54]], lip * 0.5, 0.012),
    ]
    # AU14: dimple beside one corner; AU15: lines from the corners down; AU24: bulges round pressed lips.
    if a(14):
        s = ident.contempt_side
        c = pts[54] if s > 0 else pts[48]
        crease(_curve(c + (s * 0.04, -0.05), c + (s * 0.045, 0.05), -s * 0.025), 0.6 * a(14))
    if a(15):
        for c, s in ((pts[48], -1), (pts[54], 1)):
            crease(np.stack([c + (s * 0.02, 0.03), c + (s * 0.05, 0.15)]), 0.45 * a(15))
    if a(24):
        crease(_curve(pts[50] - (0, 0.035), pts[52] - (0, 0.035), 0.01), 0.4 * a(24))
        crease(_curve(pts[58] + (0, 0.05), pts[56] + (0, 0.05), 0.015), 0.4 * a(24))
    return shapes + front[1:]  # glasses last


def draw_face(img: np.ndarray, ident: Identity, au: dict[int, float], pts: np.ndarray,
              pose: np.ndarray, wrinkle: float) -> None:
    """Draw `ident` with landmarks `pts` (canonical) onto uint8 `img` in place."""
    render(img, face_shapes(ident, au, pts, wrinkle), pose)


# ---------------------------------------------------------------------------------------------
# Sequences: identity + expression ramp + nuisance (pose, light, noise, blur, background).

def expression_strength(difficulty: float) -> float:
    """Harder data shows weaker expressions at the apex."""
    return 1.0 - 0.3 * difficulty


def _background(rng: np.random.Generator, tone: int, size: tuple[int, int], difficulty: float) -> np.ndarray:
    width, height = size
    coarse = cv2.resize(rng.normal(0, 1, (6, 6)).astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    fine = cv2.resize(rng.normal(0, 1, (max(2, height // 8), max(2, width // 8))).astype(np.float32),
                      (width, height), interpolation=cv2.INTER_LINEAR)
    bg = tone + (10 + 25 * difficulty) * coarse + (3 + 12 * difficulty) * fine
    return np.clip(bg, 0, 255).astype(np.uint8)


def _light(rng: np.random.Generator, size: tuple[int, int], difficulty: float) -> np.ndarray:
    """Multiplicative illumination: global gain times a linear gradient in a random direction."""
    width, height = size
    theta = rng.uniform(0, 2 * np.pi)
    strength = rng.uniform(0, 0.5) * difficulty
    gain = 1.0 + rng.uniform(-0.2, 0.2) * difficulty
    x = (np.arange(width, dtype=np.float32) - width / 2) / (width / 2)
    y = (np.arange(height, dtype=np.float32) - height / 2) / (height / 2)
    return (gain * (1 + strength * (np.cos(theta) * x[None, :] + np.sin(theta) * y[:, None]))).astype(np.float32)


def _pose(center: np.ndarray, scale: float, roll_deg: float) -> np.ndarray:
    r = np.deg2rad(roll_deg)
    c, s = np.cos(r) * scale, np.sin(r) * scale
    return np.array([[c, -s, center[0]], [s, c, center[1]]])


def sequence_frames(ident: Identity, code: int, n_frames: int, rng: np.random.Generator,
                    image_size: tuple[int, int], difficulty: float,
                    apex_intensity: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Render one neutral -> apex sequence: a list of (uint8 image HxW, landmarks 68x2 pixels)."""
    width, height = image_size
    d = difficulty
    apex = apex_intensity * expression_strength(d) * rng.uniform(0.6, 1.0)
    au_apex = {n: w * rng.uniform(0.85, 1.0) for n, w in EXPRESSIONS[code].items()}
    wrinkle = 0.5 - 0.25 * d   # contrast of the fine-scale creases

    # Per-sequence head placement (kept inside the image), light, background, blur.
    unit = FACE_SCALE * min(width, height)
    scale0 = unit * (1 + rng.uniform(-0.12, 0.12) * d)
    center0 = np.array([width / 2, height / 2 + 0.05 * unit]) + rng.uniform(-0.06, 0.06, 2) * min(width, height) * d
    roll0 = rng.uniform(-12, 12) * d
    light = _light(rng, (width, height), d)
    background = _background(rng, ident.background, (width, height), d)
    blur = (0.006 + 0.014 * d) * unit
    noise_std = 1.0 + 8.0 * d   # sensor noise, gray levels

    frames = []
    for t in range(n_frames):
        ramp = t / (n_frames - 1)
        intensity = apex * ramp * ramp * (3 - 2 * ramp)        # smoothstep: 0 at t=0, apex at the end
        au = {n: w * intensity for n, w in au_apex.items()}
        pose = _pose(center0 + rng.normal(0, 0.8 * d, 2), scale0 * (1 + rng.normal(0, 0.008 * d)),
                     roll0 + rng.normal(0, 0.8 * d))
        pts = landmarks(ident, au)
        img = background.copy()
        draw_face(img, ident, au, pts, pose, wrinkle)
        out = cv2.GaussianBlur(img.astype(np.float32) * light, (0, 0), blur)
        # Uniform noise with that std: several times faster to draw than normal noise.
        out += (rng.random(out.shape, dtype=np.float32) - 0.5) * (noise_std * np.sqrt(12))
        image = np.clip(out + 0.5, 0, 255).astype(np.uint8)
        points = np.clip(to_pixels(pts, pose), 0, [width - 1, height - 1])
        frames.append((image, points))
    return frames


def subject_plan(seed: int, index: int, expression_rate: float,
                 contempt_rate: float) -> tuple[int, Identity, list[int]]:
    """Subject number (gaps like CK+), identity, and the CK+ codes of its sequences in order."""
    rng = np.random.default_rng([seed, index, 0])
    gap = int(rng.choice([1, 2, 3], p=[0.7, 0.2, 0.1]))
    ident = make_identity(rng)
    codes = [c for c in EXPRESSIONS
             if rng.random() < (contempt_rate if c == CONTEMPT else expression_rate)]
    if not codes:
        codes = [int(rng.choice([c for c in EXPRESSIONS if c != CONTEMPT]))]
    return gap, ident, [int(c) for c in rng.permutation(codes)]


def emotion_text(code: int) -> str:
    return f"   {float(code):.7e}\n"


def landmarks_text(points: np.ndarray) -> str:
    return "".join(f"   {x:.7e}   {y:.7e}\n" for x, y in points)


Entry = tuple[str, bytes | None]   # ('/'-separated path under the root, bytes); None: a folder


def subject_entries(index: int, number: int, ident: Identity, codes: list[int], *, seed: int,
                    frames: tuple[int, int], labelled_fraction: float, image_size: tuple[int, int],
                    difficulty: float, apex_intensity: float) -> tuple[list[Entry], Counter, int, int, int]:
    """One subject's folders and files in writing order; (entries, label counts, sequences,
    labelled, frames).

    Runs in a worker process, so it takes plain values, not the params section (whose record
    of the keys read stays in the parent), and returns bytes for the parent to write in order."""
    lo, hi = frames
    counts: Counter = Counter()
    entries: list[Entry] = []
    n_sequences = n_labelled = n_frames = 0
    subject = f"S{number:03d}"
    for j, code in enumerate(codes, start=1):
        rng = np.random.default_rng([seed, index, j])
        sequence = f"{j:03d}"
        n = int(rng.integers(lo, hi + 1))
        labelled = bool(rng.random() < labelled_fraction)
        images = sequence_frames(ident, code, n, rng, image_size, difficulty, apex_intensity)
        image_dir = f"cohn-kanade-images/{subject}/{sequence}"
        mark_dir = f"Landmarks/{subject}/{sequence}"
        emotion_dir = f"Emotion/{subject}/{sequence}"
        entries += [(image_dir, None), (mark_dir, None), (emotion_dir, None)]
        for t, (image, points) in enumerate(images, start=1):
            stem = f"{subject}_{sequence}_{t:08d}"
            ok, png = cv2.imencode(".png", image)   # the bytes cv2.imwrite writes
            if not ok:
                raise OSError(f"could not encode {image_dir}/{stem}.png")
            entries.append((f"{image_dir}/{stem}.png", png.tobytes()))
            entries.append((f"{mark_dir}/{stem}_landmarks.txt", landmarks_text(points).encode()))
        if labelled:   # unlabelled sequences keep an empty Emotion dir, like CK+
            entries.append((f"{emotion_dir}/{subject}_{sequence}_{n:08d}_emotion.txt", emotion_text(code).encode()))
            counts[CKPLUS[code]] += 1
        n_sequences += 1
        n_labelled += labelled
        n_frames += n
    return entries, counts, n_sequences, n_labelled, n_frames


class FolderWriter:
    """Entries as folders and files under `root` (CK+ extracted)."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir()

    def add(self, name: str, data: bytes | None) -> None:
        if data is None:
            (self.root / name).mkdir(parents=True)
        else:
            (self.root / name).write_bytes(data)

    def close(self) -> None:
        pass


def zip_info(name: str) -> zipfile.ZipInfo:
    """Fixed metadata: the same entries give the same zip bytes on any machine and day."""
    info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
    info.create_system = 3   # unix, so the permission bits below are honoured on extraction
    info.external_attr = (0o40755 << 16) | 0x10 if name.endswith("/") else 0o100644 << 16
    info.compress_type = zipfile.ZIP_STORED   # PNGs are compressed already; stored text is zlib-independent
    return info


class ZipWriter:
    """Entries into CK+'s zips under `root`, each folder once before what it holds (as `zip -r`
    does, so empty Emotion folders survive and the zips extract to exactly the folders)."""

    def __init__(self, root: Path):
        root.mkdir()
        self.zips = {top: zipfile.ZipFile(root / name, "w") for top, name in ARCHIVES.items()}
        self.folders: set[str] = set()

    def add(self, name: str, data: bytes | None) -> None:
        parts = name.split("/")
        archive = self.zips[parts[0]]
        for k in range(1, len(parts) + (data is None)):
            folder = "/".join(parts[:k]) + "/"
            if folder not in self.folders:
                self.folders.add(folder)
                archive.writestr(zip_info(folder), b"")
        if data is not None:
            archive.writestr(zip_info(name), data)

    def close(self) -> None:
        for archive in self.zips.values():
            archive.close()


WRITERS = {"zips": ZipWriter, "folders": FolderWriter}


def write_dataset(root: Path, cfg: SynthesizeParams, progress: bool = False,
                  workers: int | None = None) -> dict[str, Any]:
    """Write the CK+ tree (zips or folders, `cfg.layout`) under `root`, which must not exist yet;
    return the summary.

    Subjects are drawn in parallel processes (one per core by default); each depends only on
    (seed, index), and the parent writes them in subject order, so the bytes are the same for
    any number of workers."""
    seed = cfg.seed
    plans, number = [], 4
    for index in range(cfg.n_subjects):
        gap, ident, codes = subject_plan(seed, index, cfg.expression_rate, cfg.contempt_rate)
        number += gap   # subject numbers have gaps, like CK+
        plans.append((index, number, ident, codes))
    workers = workers or len(os.sched_getaffinity(0))
    job = functools.partial(subject_entries, seed=seed, frames=cfg.frames, labelled_fraction=cfg.labelled_fraction,
                            image_size=cfg.image_size, difficulty=cfg.difficulty, apex_intensity=cfg.apex_intensity)
    counts: Counter = Counter()
    n_sequences = n_labelled = n_frames = 0
    pool = ProcessPoolExecutor(workers) if workers > 1 and len(plans) > 1 else None
    writer = WRITERS[cfg.layout](root)
    with pool or contextlib.nullcontext(), contextlib.closing(writer):
        results = (pool.map if pool else map)(job, *zip(*plans))
        for entries, subject_counts, sequences, labelled, frames in tqdm(results, total=len(plans),
                                                                         desc="subjects", disable=not progress):
            for name, data in entries:
                writer.add(name, data)
            counts.update(subject_counts)
            n_sequences += sequences
            n_labelled += labelled
            n_frames += frames
    return {
        "subjects": cfg.n_subjects,
        "sequences": n_sequences,
        "labelled_sequences": n_labelled,
        "frames": n_frames,
        "class_counts": {CKPLUS[c]: counts[CKPLUS[c]] for c in sorted(EXPRESSIONS)},
        "seed": seed,
        "difficulty": cfg.difficulty,
    }


def synthesize(cfg: SynthesizeParams, out: str | os.PathLike, progress: bool = False,
               workers: int | None = None) -> dict[str, Any]:
    """Write the whole synthetic CK+ tree to `out` atomically (replacing any old one); return a summary."""
    log.info("synthesizing %d subjects (%sx%s px, difficulty %.2f, seed %d) into %s as %s",
             cfg.n_subjects, *cfg.image_size, cfg.difficulty, cfg.seed, out, cfg.layout)
    with atomic_path(out) as tmp:
        summary = write_dataset(tmp, cfg, progress=progress, workers=workers)
    log.info("wrote %d sequences (%d labelled), %d frames", summary["sequences"],
             summary["labelled_sequences"], summary["frames"])
    return summary
