"""Find faces in an image: dlib (a box and the 68 iBUG landmarks CK+'s files use) or opencv's Haar
cascade (a box only).

Detectors (`extract.detector`, `mrfer predict --detector`):
  landmarks68  dlib's HOG frontal-face detector, then the 68-point shape predictor
  dlib_cnn     dlib's MMOD CNN face detector (meant for turned faces; 1-4 s per image on a CPU),
               then the same 68-point predictor; images of one size are detected as one batch
  haar         opencv's frontal-face cascade (a box only, so faces are not eye-levelled)

The dlib models are the files of the `face-recognition-models` package (Davis King's dlib-models),
loaded once, on first use. A missing package or model file is one line naming what to install.
"""
from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mrfer.errors import MrferError

DETECTORS = ("landmarks68", "dlib_cnn", "haar")
DLIB_PACKAGE = "dlib-bin==20.0.1.post1"
MODELS_PACKAGE = "face-recognition-models==0.3.0"
LANDMARKS_MODEL = "shape_predictor_68_face_landmarks.dat"
CNN_MODEL = "mmod_human_face_detector.dat"
# dlib's detectors scan the image upsampled once (4x the pixels to scan, as dlib's own examples
# do) so that smaller faces fit their windows: both then find faces down to 32 px (bench/detect.py).
UPSAMPLE = 1
CNN_BATCH = 16              # images per MMOD forward pass (memory grows with it)
HAAR_MIN_FACE = 24          # px: the cascade's own 24 px window


class DetectorMissingError(MrferError, FileNotFoundError):
    """A detector's package or model file is not installed."""


@dataclass(frozen=True)
class Face:
    """One detected face: box (x, y, w, h) in pixels and, for dlib detectors, 68x2 landmarks."""
    box: tuple[int, int, int, int]
    landmarks: np.ndarray | None = None


# ---------------------------------------------------------------- dlib models, loaded once


def import_dlib():
    try:
        import dlib
    except ImportError:
        raise DetectorMissingError(f"the dlib face detectors need dlib: pip install {DLIB_PACKAGE}") from None
    return dlib


def models_dir() -> Path:
    """The model folder of `face-recognition-models`, found without importing the package (its
    __init__ needs setuptools' pkg_resources just to compute these paths)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise DetectorMissingError(f"the dlib face models are not installed: pip install {MODELS_PACKAGE}")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def model_file(name: str) -> str:
    path = models_dir() / name
    if not path.is_file():
        raise DetectorMissingError(f"{path}: dlib model file missing; reinstall it: "
                                   f"pip install --force-reinstall {MODELS_PACKAGE}")
    return str(path)


@functools.lru_cache(maxsize=1)
def hog_detector():
    return import_dlib().get_frontal_face_detector()


@functools.lru_cache(maxsize=1)
def shape_predictor():
    return import_dlib().shape_predictor(model_file(LANDMARKS_MODEL))


@functools.lru_cache(maxsize=1)
def cnn_detector():
    return import_dlib().cnn_face_detection_model_v1(model_file(CNN_MODEL))


@functools.lru_cache(maxsize=1)
def haar_cascade() -> cv2.CascadeClassifier:
    path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise RuntimeError(f"cannot load the Haar face cascade from {path} (opencv-python 4.x ships it)")
    return cascade


def load(detector: str) -> None:
    """Load `detector`'s models now (a missing one fails before any work)."""
    check(detector)
    if detector == "haar":
        haar_cascade()
        return
    shape_predictor()
    hog_detector() if detector == "landmarks68" else cnn_detector()


def check(detector: str) -> None:
    if detector not in DETECTORS:
        raise ValueError(f"detector must be one of {DETECTORS}, got {detector!r}")


# ---------------------------------------------------------------- detection


def haar_boxes(image: np.ndarray, min_size: int = HAAR_MIN_FACE) -> list[tuple[int, int, int, int]]:
    """Face boxes (x, y, w, h), largest first, from the Haar frontal-face cascade."""
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    boxes = haar_cascade().detectMultiScale(cv2.equalizeHist(gray), scaleFactor=1.1,
                                            minNeighbors=5, minSize=(min_size, min_size))
    return sorted((tuple(int(v) for v in b) for b in boxes), key=lambda b: -b[2] * b[3])


def to_rgb(image: np.ndarray) -> np.ndarray:
    """dlib's models were trained on RGB; our images are BGR (or gray)."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    return np.ascontiguousarray(image[:, :, ::-1])


def landmarks_in(rgb: np.ndarray, rect) -> np.ndarray:
    """The 68 points (x, y) the shape predictor places in dlib rectangle `rect`."""
    shape = shape_predictor()(rgb, rect)
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


def landmarks_in_box(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The 68 points the predictor places in a box (x, y, w, h) of a BGR image."""
    x, y, w, h = box
    rect = import_dlib().rectangle(int(x), int(y), int(x + w - 1), int(y + h - 1))
    return landmarks_in(to_rgb(image), rect)


def dlib_faces(rgb: np.ndarray, rects) -> list[Face]:
    faces = [Face((r.left(), r.top(), r.width(), r.height()), landmarks_in(rgb, r)) for r in rects]
    return sorted(faces, key=lambda f: -f.box[2] * f.box[3])


def find_faces(image: np.ndarray, detector: str) -> list[Face]:
    """Faces in a BGR image, largest first."""
    return find_faces_batch([image], detector)[0]


def find_faces_batch(images: list[np.ndarray], detector: str) -> list[list[Face]]:
    """Faces in each BGR image, largest first; `dlib_cnn` runs images of one size as one batch."""
    check(detector)
    if detector == "haar":
        return [[Face(box) for box in haar_boxes(image)] for image in images]
    rgbs = [to_rgb(image) for image in images]
    if detector == "landmarks68":
        return [dlib_faces(rgb, hog_detector()(rgb, UPSAMPLE)) for rgb in rgbs]
    found: list[list[Face]] = [[] for _ in images]
    by_shape: dict[tuple, list[int]] = {}
    for index, rgb in enumerate(rgbs):  # dlib batches only images of one size
        by_shape.setdefault(rgb.shape, []).append(index)
    for indices in by_shape.values():
        detections = cnn_detector()([rgbs[i] for i in indices], UPSAMPLE, batch_size=CNN_BATCH)
        for i, mmod in zip(indices, detections):
            found[i] = dlib_faces(rgbs[i], [d.rect for d in mmod])
    return found
