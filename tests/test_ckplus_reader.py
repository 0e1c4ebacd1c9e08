import shutil
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from ckplus_fixture import ZIPS, corrupt_member, make_ckplus, write_zip, zip_ckplus
from mrfer.data import datasets, faces, labels
from mrfer.data.datasets import ckplus
from mrfer.data.records import ArchiveMember
from mrfer.errors import DatasetError, ImageError


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


# ---------------------------------------------------------------- CK+ as distributed: zips

OPTIONS = [{}, {"frames": "all"}, {"apex_frames": 4, "neutral_frames": 2}]
FIELDS = ("source", "label", "subject", "split", "sequence", "frame", "box", "aligned")


@pytest.fixture(scope="module")
def ck_zips(ck, tmp_path_factory) -> Path:
    return zip_ckplus(ck, tmp_path_factory.mktemp("ck_zips"))


def pixels(image) -> np.ndarray | str:
    """The decoded image, or the kind of error decoding it gave."""
    try:
        return faces.load_image(image)
    except ImageError as e:
        return str(e).split(":")[0]


def assert_same_records(a_root: Path, b_root: Path, options: dict) -> None:
    """Both roots give the same records (fields, landmarks, decoded pixels) and the same skips."""
    a, a_skips = datasets.read("ckplus", a_root, options)
    b, b_skips = datasets.read("ckplus", b_root, options)
    assert [[getattr(r, f) for f in FIELDS] for r in a] == [[getattr(r, f) for f in FIELDS] for r in b]
    for x, y in zip(a, b):
        assert (x.landmarks is None and y.landmarks is None) or np.array_equal(x.landmarks, y.landmarks)
        px, py = pixels(x.image), pixels(y.image)
        assert (px == py) if isinstance(px, str) else np.array_equal(px, py)
    assert a_skips.items == b_skips.items


@pytest.mark.parametrize("options", OPTIONS)
def test_zips_give_the_records_the_folders_give(ck, ck_zips, options):
    assert sorted(p.name for p in ck_zips.iterdir()) == sorted(ZIPS.values())
    assert_same_records(ck, ck_zips, options)


def test_zip_frames_are_member_references_read_when_needed(ck, ck_zips):
    records, _ = datasets.read("ckplus", ck_zips)
    first = records[0]
    assert first.image == ArchiveMember(ck_zips / "extended-cohn-kanade-images.zip", first.source)
    assert all(isinstance(r.image, ArchiveMember) for r in records)
    expected = cv2.imread(str(ck / first.source), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(faces.load_image(first.image), cv2.cvtColor(expected, cv2.COLOR_GRAY2BGR))
    # the corrupt frame is a record, as from folders; decoding it names archive and member
    bad = next(r for r in records if r.source.endswith("S011_002_00000005.png"))
    with pytest.raises(ImageError, match=r"corrupt image: .*extended-cohn-kanade-images\.zip:cohn-kanade-images/"
                                         r"S011/002/S011_002_00000005\.png"):
        faces.load_image(bad.image)


@pytest.mark.parametrize("compression, dirs", [(zipfile.ZIP_STORED, True), (zipfile.ZIP_BZIP2, True),
                                               (zipfile.ZIP_DEFLATED, False)])
def test_any_zip_compression_and_zips_without_folder_entries(ck, tmp_path, compression, dirs):
    assert_same_records(ck, zip_ckplus(ck, tmp_path, compression, dirs=dirs), {})


def test_each_part_is_a_folder_or_a_zip(ck, tmp_path):
    root = zip_ckplus(ck, tmp_path, parts=("cohn-kanade-images", "Landmarks"))
    shutil.copytree(ck / "Emotion", root / "Emotion")
    assert_same_records(ck, root, {})
    (root / "Landmarks.zip").unlink()   # landmarks are optional, as with folders
    records, _ = datasets.read("ckplus", root)
    assert all(r.landmarks is None for r in records)


def test_an_extracted_folder_wins_over_its_zip_with_a_note(ck, tmp_path):
    root = tmp_path / "both"
    shutil.copytree(ck, root)
    write_zip(root / "extended-cohn-kanade-images.zip", {"cohn-kanade-images/S099/001/S099_001_00000001.png": b"x"})
    records, skips = datasets.read("ckplus", root)
    assert "S099" not in {r.subject for r in records}
    assert [(n["source"], n["note"].split(":")[0]) for n in skips.notes] == [
        ("extended-cohn-kanade-images.zip", "not read")]
    assert "folder 'cohn-kanade-images'" in skips.notes[0]["note"]


def test_corrupt_members_are_reported_like_bad_files(ck, tmp_path):
    root = zip_ckplus(ck, tmp_path)
    corrupt_member(root / "Emotion_labels.zip", "Emotion/S005/002/S005_002_00000005_emotion.txt")
    corrupt_member(root / "Landmarks.zip", "Landmarks/S010/001/S010_001_00000006_landmarks.txt")
    corrupt_member(root / "extended-cohn-kanade-images.zip", "cohn-kanade-images/S005/001/S005_001_00000004.png")
    records, skips = datasets.read("ckplus", root)
    reasons = {item["source"]: item["reason"] for item in skips.items}
    assert reasons["Emotion/S005/002/S005_002_00000005_emotion.txt"].startswith(
        "unreadable archive member: Emotion_labels.zip:Emotion/S005/002/")
    assert reasons["Landmarks/S010/001/S010_001_00000006_landmarks.txt"].startswith("unreadable archive member")
    assert len(skips) == 6 and "S005/002" not in {r.sequence for r in records}
    frame = next(r for r in records if r.source.endswith("S005_001_00000004.png"))
    with pytest.raises(ImageError, match=r"unreadable or corrupt image: .*S005_001_00000004\.png \(.+\)$"):
        faces.load_image(frame.image)


def test_a_missing_member_or_archive_is_a_clear_image_error(ck_zips, tmp_path):
    archive = ck_zips / "extended-cohn-kanade-images.zip"
    with pytest.raises(ImageError, match=r"missing file: .*images\.zip:cohn-kanade-images/S005/001/nope\.png"):
        faces.load_image(ArchiveMember(archive, "cohn-kanade-images/S005/001/nope.png"))
    with pytest.raises(ImageError, match=r"missing file: .*gone\.zip$"):
        faces.load_image(ArchiveMember(tmp_path / "gone.zip", "a.png"))
    (tmp_path / "fake.zip").write_bytes(b"not a zip")
    with pytest.raises(ImageError, match=r"unreadable or corrupt image: .*fake\.zip:a\.png"):
        faces.load_image(ArchiveMember(tmp_path / "fake.zip", "a.png"))


def test_a_rewritten_archive_is_read_afresh(tmp_path):
    archive, name = tmp_path / "a.zip", "cohn-kanade-images/S1/001/S1_001_00000001.png"
    for value in (10, 200):
        png = cv2.imencode(".png", np.full((4, 4), value, np.uint8))[1].tobytes()
        write_zip(tmp_path / "next.zip", {name: png}).replace(archive)
        assert faces.load_image(ArchiveMember(archive, name))[0, 0, 0] == value


def test_a_file_that_is_not_a_zip_is_a_dataset_error(ck_zips, tmp_path):
    root = tmp_path / "bad"
    shutil.copytree(ck_zips, root)
    (root / "Emotion_labels.zip").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DatasetError, match=r"Emotion_labels\.zip: not a readable zip archive"):
        datasets.read("ckplus", root)
    whole = (ck_zips / "Emotion_labels.zip").read_bytes()
    (root / "Emotion_labels.zip").write_bytes(whole[: len(whole) // 2])   # cut short: no index
    with pytest.raises(DatasetError, match=r"Emotion_labels\.zip: not a readable zip archive"):
        datasets.read("ckplus", root)


@pytest.mark.parametrize("name", ["cohn-kanade-images/../../evil/S1/001/S1_001_00000001.png",
                                  "/cohn-kanade-images/S1/001/S1_001_00000001.png",
                                  "cohn-kanade-images/S1/..\\..\\x.png"])
def test_a_member_outside_the_archive_is_refused(ck_zips, tmp_path, name):
    root = tmp_path / "unsafe"
    shutil.copytree(ck_zips, root)
    write_zip(root / "extended-cohn-kanade-images.zip", {name: b"x"})
    with pytest.raises(DatasetError, match=r"extended-cohn-kanade-images\.zip: refused: member .* points outside"):
        datasets.read("ckplus", root)


def test_a_zip_without_its_folder_and_a_missing_part_are_dataset_errors(ck_zips, tmp_path):
    root = tmp_path / "wrapped"
    shutil.copytree(ck_zips, root)
    write_zip(root / "Emotion_labels.zip", {"Emotion_labels/Emotion/S005/001/S005_001_00000006_emotion.txt": b"3"})
    with pytest.raises(DatasetError, match=r"Emotion_labels\.zip: no member under 'Emotion/<subject>/<sequence>/'.*"
                                           r"holds 'Emotion_labels/Emotion/S005"):
        datasets.read("ckplus", root)
    (root / "Emotion_labels.zip").unlink()
    with pytest.raises(DatasetError, match=r"CK\+ labels not found: expected the folder 'Emotion' or its zip "
                                           r"'Emotion_labels\.zip'"):
        datasets.read("ckplus", root)


def test_members_zipfile_cannot_read_are_refused_up_front():
    info = zipfile.ZipInfo("cohn-kanade-images/S1/001/S1_001_00000001.png")
    info.compress_type = 9   # Deflate64, as some Windows tools write
    with pytest.raises(DatasetError, match="compression method 9.*extract the archive"):
        ckplus.check_member(Path("x.zip"), info)
    info.compress_type, info.flag_bits = zipfile.ZIP_STORED, 0x1
    with pytest.raises(DatasetError, match="is encrypted"):
        ckplus.check_member(Path("x.zip"), info)
