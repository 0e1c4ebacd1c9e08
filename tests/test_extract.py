import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from ckplus_fixture import face_landmarks, make_ckplus
from mrfer.data import extract, faces, shards
from mrfer.data.records import Record
from mrfer.errors import DatasetError


def config(root, **overrides):
    return {**extract.DEFAULTS, "root": str(root), "size": 32, "seed": 0, **overrides}


def run(tmp_path, cfg):
    report = extract.extract(cfg, tmp_path / "out", tmp_path / "report.json")
    return report, shards.load_array(tmp_path / "out" / "faces.npy"), shards.read_manifest(tmp_path / "out" / "manifest.csv")


def test_ckplus_extract_writes_faces_manifest_and_skip_report(tmp_path):
    root = make_ckplus(tmp_path / "ck")
    report, images, rows = run(tmp_path, config(root))
    assert images.shape == (len(rows), 32, 32, 1) and images.dtype == np.uint8
    # 23 reader records (6 sequences x 4 frames, less the 67-point frame) - 3 contempt - 1 corrupt
    assert report["faces"] == len(rows) == 19
    assert {r["class"] for r in rows} == {"neutral", "disgust", "happy", "surprise", "angry", "fear"}
    assert all(r["located"] == "landmarks" for r in rows)
    by_reason = report["skipped_by_reason"]
    assert by_reason["contempt dropped"] == 3  # S010/002: its neutral first frame is kept
    assert by_reason["unreadable or corrupt image"] == 1
    assert json.loads((tmp_path / "report.json").read_text())["skips"] == report["skips"]


def test_contempt_kept_as_eighth_class(tmp_path):
    report, _, rows = run(tmp_path, config(make_ckplus(tmp_path / "ck"), contempt="keep"))
    assert report["per_class"]["contempt"] == 3
    assert {r["label"] for r in rows if r["class"] == "contempt"} == {7}


def test_bad_config_and_empty_dataset_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="extract.color"):
        extract.extract(config(tmp_path, color="cmyk"), tmp_path / "o", tmp_path / "r.json")
    with pytest.raises(DatasetError, match="cohn-kanade-images"):
        extract.extract(config(tmp_path), tmp_path / "o", tmp_path / "r.json")
    assert not (tmp_path / "o").exists()


def test_all_images_unreadable_leaves_no_output(tmp_path):
    root = tmp_path / "folders"
    (root / "happy").mkdir(parents=True)
    (root / "happy" / "a.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="no face could be extracted"):
        extract.extract(config(root, dataset="folders", options={}), tmp_path / "o", tmp_path / "r.json")
    assert not (tmp_path / "o").exists()


def test_alignment_levels_the_eyes():
    image = np.full((200, 200, 3), 128, np.uint8)
    points = face_landmarks(100, 100, 50)
    angle = np.radians(20)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    tilted = (points - 100) @ rot.T + 100
    for p in tilted[36:48]:  # paint the eyes black so we can find them in the crop
        cv2.circle(image, (int(p[0]), int(p[1])), 3, (0, 0, 0), -1)
    face = faces.align_by_landmarks(image, tilted, 64, 0.1)
    dark = np.argwhere(face[:, :, 0] < 60)
    left, right = dark[dark[:, 1] < 32], dark[dark[:, 1] >= 32]
    assert abs(left[:, 0].mean() - right[:, 0].mean()) < 2  # same row: eyes level


def test_box_crop_and_center_fallback(tmp_path):
    image = np.zeros((100, 200, 3), np.uint8)
    image[20:60, 120:160] = 255
    crop = faces.crop_box(image, (120, 20, 40, 40), 16, 0.0)
    assert crop.mean() > 250
    path = tmp_path / "blank.png"
    cv2.imwrite(str(path), np.full((50, 80), 77, np.uint8))
    rec = Record(image=path, label=0, source="blank.png")
    assert faces.extract_face(rec, 16, 0.1, "gray", "skip") == (None, "no face found by the Haar detector")
    face, how = faces.extract_face(rec, 16, 0.1, "rgb", "center")
    assert how == "center" and face.shape == (16, 16, 3)


def test_load_image_errors_name_the_file(tmp_path):
    with pytest.raises(faces.ImageError, match="missing file: .*nope.png"):
        faces.load_image(tmp_path / "nope.png")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(faces.ImageError, match="corrupt image: .*bad.jpg"):
        faces.load_image(bad)


def test_folders_reader_splits_subjects_and_unknown_class(tmp_path):
    from mrfer.data import datasets
    for split in ("train", "test"):
        for cls in ("Happy", "sad", "bored"):
            d = tmp_path / split / cls
            d.mkdir(parents=True)
            for i in range(2):
                cv2.imwrite(str(d / f"S{i:02d}_{cls}.png"), np.full((8, 8), 9, np.uint8))
    (tmp_path / "train" / "Happy" / "nosubject.png").write_bytes(b"x")
    records, skips = datasets.read("folders", tmp_path, {"subject_regex": r"^(S\d+)_"})
    assert {(r.split, r.label, r.subject) for r in records} == {
        (s, lab, f"S{i:02d}") for s in ("train", "test") for lab in (3, 4) for i in range(2)}
    assert len(records) == 8
    reasons = sorted(item["reason"].split(":")[0] for item in skips.items)
    assert reasons == ["no subject", "unknown class folder", "unknown class folder"]
    records, _ = datasets.read("folders", tmp_path, {"class_map": {"bored": "neutral"}})
    assert sum(r.label == 6 for r in records) == 4


def test_export_folders(tmp_path):
    run(tmp_path, config(make_ckplus(tmp_path / "ck")))
    n = extract.export_folders(tmp_path / "out", tmp_path / "export")
    written = sorted(p.parent.name for p in (tmp_path / "export").rglob("*.png"))
    assert len(written) == n == 19
    assert set(written) == {"neutral", "disgust", "happy", "surprise", "angry", "fear"}
