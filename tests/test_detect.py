"""Face detectors (mrfer.data.detect) on synthetic faces whose 68 landmarks are known, the
eye-levelling alignment of detected faces, the extract path without given landmarks, and the
one-line error when dlib or its model files are missing.

The synthetic generator draws each face from its 68 iBUG points, so those points are the truth.
dlib's detectors and 68-point predictor do find these drawn faces (bench/detect.py measures how
well as they shrink); the thresholds here are loose multiples of what the benchmark measures.
"""
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from mrfer.data import detect, extract, faces, shards, synthetic
from mrfer.data.records import Record

REPO = Path(__file__).resolve().parents[1]


def synthetic_face(index: int = 0, side: int = 256, roll: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A BGR synthetic apex frame `side` px square (face ~side/2 wide), rolled by `roll` degrees
    about the image centre, and its true 68 landmarks in pixels."""
    _, ident, codes = synthetic.subject_plan(0, index, expression_rate=0.5, contempt_rate=0.1)
    frames = synthetic.sequence_frames(ident, codes[0], 2, np.random.default_rng([0, index, 1]), (256, 256),
                                       difficulty=0.0, apex_intensity=1.0)
    gray, points = frames[-1]
    matrix = cv2.getRotationMatrix2D((128.0, 128.0), roll, side / 256)
    matrix[:, 2] += (side - 256) / 2
    image = cv2.warpAffine(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), matrix, (side, side),
                           flags=cv2.INTER_AREA if side < 256 else cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return image, points @ matrix[:, :2].T + matrix[:, 2]


def inter_ocular(points: np.ndarray) -> float:
    return float(np.linalg.norm(points[45] - points[36]))


def landmark_error(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.linalg.norm(found - truth, axis=1).mean() / inter_ocular(truth))


def box_center_error(box, truth: np.ndarray) -> float:
    x, y, w, h = box
    return float(np.linalg.norm(np.array([x + w / 2, y + h / 2]) - (truth.min(0) + truth.max(0)) / 2)
                 / inter_ocular(truth))


@pytest.mark.parametrize("detector", ["landmarks68", "dlib_cnn"])
def test_dlib_detectors_find_the_face_and_its_68_landmarks(detector):
    image, truth = synthetic_face(0, side=160)   # a ~80 px face: quick for the CNN too
    found = detect.find_faces(image, detector)
    assert len(found) == 1
    face = found[0]
    assert face.landmarks.shape == (68, 2)
    assert box_center_error(face.box, truth) < 0.5
    assert landmark_error(face.landmarks, truth) < 0.15   # the benchmark measures ~0.05


def test_dlib_cnn_batches_images_of_different_sizes():
    a, truth_a = synthetic_face(1, side=128)
    b, truth_b = synthetic_face(2, side=160)
    found = detect.find_faces_batch([a, np.full((96, 96, 3), 120, np.uint8), b], "dlib_cnn")
    assert [len(f) for f in found] == [1, 0, 1]
    assert landmark_error(found[0][0].landmarks, truth_a) < 0.15
    assert landmark_error(found[2][0].landmarks, truth_b) < 0.15


def test_haar_gives_boxes_on_the_face_without_landmarks():
    hits = 0
    for index in range(4):
        image, truth = synthetic_face(index, side=160)
        found = detect.find_faces(image, "haar")
        assert all(f.landmarks is None for f in found)
        hits += any(box_center_error(f.box, truth) < 0.6 for f in found)
    assert hits >= 2   # the cascade misses some drawn faces; the benchmark measures its rate


def test_shape_predictor_in_a_given_box():
    image, truth = synthetic_face(3, side=256)
    lo, hi = truth.min(0), truth.max(0)
    box = (int(lo[0]), int(lo[1]), int(hi[0] - lo[0]), int(hi[1] - lo[1]))
    assert landmark_error(detect.landmarks_in_box(image, box), truth) < 0.2


@pytest.mark.parametrize("detector", detect.DETECTORS)
def test_a_16px_face_is_not_found_and_is_skipped(detector):
    image, _ = synthetic_face(0, side=32)          # face ~16 px wide
    image = cv2.copyMakeBorder(image, 64, 64, 64, 64, cv2.BORDER_REPLICATE)
    assert detect.find_faces(image, detector) == []
    record = Record(image=image, label=0, source="tiny.png")
    assert faces.extract_face(record, 32, 0.1, "gray", "skip", detector) == (
        None, f"no face found by the {detector} detector")


def given_crop(image: np.ndarray, truth: np.ndarray, size: int, margin: float) -> np.ndarray:
    record = Record(image=image, label=0, source="given.png", landmarks=truth)
    return faces.extract_face(record, size, margin, "gray", "skip", "landmarks68")[0]


def test_detected_face_is_eye_levelled_and_centred():
    image, truth = synthetic_face(1, side=256, roll=20.0)
    size, margin = 128, 0.1
    record = Record(image=image, label=0, source="rolled.png")
    crop, how = faces.extract_face(record, size, margin, "gray", "skip", "landmarks68")
    assert how == "detected (landmarks68)"
    # In the crop the eyes are level, and the face sits in the middle, filling it up to the margin,
    # where the crop by the true landmarks (the CK+ path) puts it too.
    eyes = {}
    for name, image_crop in (("detected", crop), ("given", given_crop(image, truth, size, margin))):
        marks = detect.find_faces(cv2.cvtColor(image_crop, cv2.COLOR_GRAY2BGR), "landmarks68")[0].landmarks
        left, right = marks[36:42].mean(0), marks[42:48].mean(0)
        assert abs(np.degrees(np.arctan2(*(right - left)[::-1]))) < 4
        assert abs((left + right)[0] / 2 - size / 2) < 0.06 * size
        assert abs(np.ptp(marks[:, 0]) - size / (1 + 2 * margin)) < 0.15 * size
        eyes[name] = (left + right) / 2
    assert np.linalg.norm(eyes["detected"] - eyes["given"]) < 0.05 * size
    # Unaligned, the same face keeps its 20 degree roll: the check above can fail.
    rolled = detect.find_faces(image, "landmarks68")[0].landmarks
    left, right = rolled[36:42].mean(0), rolled[42:48].mean(0)
    assert abs(np.degrees(np.arctan2(*(right - left)[::-1]))) > 12


def test_extract_detects_faces_of_a_dataset_without_landmarks(tmp_path):
    """The folders reader gives no landmarks: the detector locates, aligns, or lists a skip."""
    for cls, index in (("happy", 0), ("sad", 1)):
        (tmp_path / "raw" / "train" / cls).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "raw" / "train" / cls / f"S0{index}_a.png"), synthetic_face(index, 200)[0])
    cv2.imwrite(str(tmp_path / "raw" / "train" / "sad" / "S02_blank.png"), np.full((120, 120), 90, np.uint8))
    values = {**yaml.safe_load((REPO / "params.yaml").read_text())["extract"], "dataset": "folders",
              "root": str(tmp_path / "raw"), "options": {"aligned": False}, "size": 48, "no_face": "skip",
              "detector": "landmarks68"}
    cfg = extract.ExtractParams.model_validate(values)
    report = extract.extract(cfg, tmp_path / "out", tmp_path / "report.json", tmp_path / "dup.csv")
    assert report["faces"] == 2 and report["located"] == {"detected (landmarks68)": 2}
    assert report["skipped_by_reason"] == {"no face found by the landmarks68 detector": 1}
    assert shards.load_array(tmp_path / "out" / "faces.npy").shape == (2, 48, 48, 1)


@pytest.fixture
def fresh_models():
    """Drop the cached dlib models around a test that swaps where they come from."""
    caches = (detect.shape_predictor, detect.cnn_detector, detect.hog_detector)
    for cache in caches:
        cache.cache_clear()
    yield
    for cache in caches:
        cache.cache_clear()


def test_missing_model_file_is_one_line_naming_the_package(fresh_models, monkeypatch, tmp_path):
    monkeypatch.setattr(detect, "models_dir", lambda: tmp_path)
    with pytest.raises(detect.DetectorMissingError) as error:
        detect.load("landmarks68")
    message = str(error.value)
    assert "\n" not in message and "shape_predictor_68_face_landmarks.dat" in message
    assert "pip install --force-reinstall face-recognition-models==0.3.0" in message
    with pytest.raises(detect.DetectorMissingError, match="mmod_human_face_detector.dat"):
        detect.find_faces(np.zeros((64, 64, 3), np.uint8), "dlib_cnn")


def test_missing_packages_are_one_line_naming_what_to_install(fresh_models, monkeypatch):
    monkeypatch.setattr(detect.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(detect.DetectorMissingError, match=r"pip install face-recognition-models==0\.3\.0$"):
        detect.load("landmarks68")
    monkeypatch.setitem(sys.modules, "dlib", None)   # import dlib -> ImportError
    with pytest.raises(detect.DetectorMissingError, match=r"pip install dlib-bin==20\.0\.1\.post1$"):
        detect.find_faces(np.zeros((64, 64, 3), np.uint8), "landmarks68")
