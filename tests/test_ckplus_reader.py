from pathlib import Path

import pytest

from ckplus_fixture import make_ckplus
from mrfer.data import datasets, labels
from mrfer.errors import DatasetError


@pytest.fixture(scope="module")
def ck(tmp_path_factory) -> Path:
    return make_ckplus(tmp_path_factory.mktemp("ck"))


def test_labels_frames_and_subjects(ck):
    records, skips = datasets.read("ckplus", ck, {"apex_frames": 3, "neutral_frames": 1})
    by_seq = {}
    for r in records:
        by_seq.setdefault(r.sequence, []).append((r.frame, labels.ALL_CLASSES[r.label]))
    assert by_seq["S005/001"] == [(1, "neutral"), (4, "disgust"), (5, "disgust"), (6, "disgust")]
    assert by_seq["S005/002"] == [(1, "neutral"), (3, "happy"), (4, "happy"), (5, "happy")]
    assert by_seq["S010/001"][-1] == (6, "surprise")
    assert by_seq["S010/002"] == [(1, "neutral"), (2, "contempt"), (3, "contempt"), (4, "contempt")]
    # the corrupt frame is still a record; the extractor reports it when it fails to decode
    assert [f for f, _ in by_seq["S011/002"]] == [1, 3, 4, 5]
    assert {r.subject for r in records} == {"S005", "S010", "S011", "S013"}
    assert all(r.landmarks.shape == (68, 2) for r in records)
    assert records[0].source == "cohn-kanade-images/S005/001/S005_001_00000001.png"


def test_every_fault_is_reported_with_its_reason(ck):
    _, skips = datasets.read("ckplus", ck)
    reasons = {item["source"]: item["reason"] for item in skips.items}
    assert reasons["S010/003"].startswith("unlabelled sequence")
    assert reasons["Emotion/S011/001/S011_001_00000005_emotion.txt"].startswith("label out of range")
    assert reasons["Emotion/S012/001/S012_001_00000005_emotion.txt"].startswith("empty emotion file")
    assert "67 points" in reasons["Landmarks/S013/001/S013_001_00000005_landmarks.txt"]
    assert len(skips) == 4


def test_short_sequence_never_double_labels(ck):
    records, _ = datasets.read("ckplus", ck, {"apex_frames": 4, "neutral_frames": 2})
    frames = [(r.frame, r.label) for r in records if r.sequence == "S010/002"]  # 4 frames only
    assert frames == [(1, 7), (2, 7), (3, 7), (4, 7)]


def test_missing_layout_and_unknown_dataset(tmp_path):
    with pytest.raises(DatasetError, match="cohn-kanade-images"):
        datasets.read("ckplus", tmp_path)
    with pytest.raises(DatasetError, match="unknown dataset 'nope'.*ckplus"):
        datasets.read("nope", tmp_path)
    with pytest.raises(DatasetError, match="unknown option"):
        datasets.read("ckplus", tmp_path, {"apexframes": 3})


def test_empty_dataset_is_an_error(tmp_path):
    (tmp_path / "cohn-kanade-images").mkdir()
    (tmp_path / "Emotion").mkdir()
    with pytest.raises(DatasetError, match="no usable faces"):
        datasets.read("ckplus", tmp_path)


def test_registry_lists_readers_and_checks_options():
    assert "ckplus" in datasets.available() and datasets.available() == sorted(datasets.available())
    datasets.check_options("ckplus", {"apex_frames": 2, "frames": "all"})
    with pytest.raises(DatasetError, match=r"dataset 'ckplus': unknown option\(s\) apexframes "
                                           r"\(allowed: apex_frames, frames, neutral_frames\)"):
        datasets.check_options("ckplus", {"apexframes": 3})
    with pytest.raises(DatasetError, match="unknown dataset 'nope'"):
        datasets.check_options("nope", {})
