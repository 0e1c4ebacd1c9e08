"""Readers for Oulu-CASIA, SFEW 2.0, AFEW and Aff-Wild2 on tiny copies of their real layouts
(tests/video_dataset_fixtures.py): each reader's options, layouts and skip messages. What every
reader must do, on its default read of these copies, is checked in test_readers.py."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from video_dataset_fixtures import (ROW_FIELDS, afew_expected, affwild2_expected, make_afew, make_affwild2,
                                    make_oulu, make_sfew, oulu_expected, sfew_expected)

from mrfer.data import labels
from mrfer.data.datasets import read
from mrfer.data.faces import load_image
from mrfer.errors import DatasetError, ImageError


def rows(records):
    """Comparable view of records: everything but the image itself."""
    return sorted(tuple(getattr(r, field) for field in ROW_FIELDS) for r in records)


def kinds(items, key="reason"):
    """Multiset of (source, reason kind) pairs from SkipLog items or notes."""
    return Counter((item["source"], item[key].split(":")[0]) for item in items)


def reason_for(skips, source, kind):
    found = [i["reason"] for i in skips.items
             if i["source"] == source and i["reason"].startswith(kind)]
    assert len(found) == 1, (source, kind, skips.items)
    return found[0]


# --- Oulu-CASIA ---------------------------------------------------------------------------

def test_oulu_unknown_class_folder_is_named(tmp_path):
    truth = make_oulu(tmp_path)
    _, skips = read("oulu", tmp_path)
    assert "Smile" in reason_for(skips, truth["skips"][0][0], "unknown class folder")


def test_oulu_options_cameras_lightings_neutral(tmp_path):
    truth = make_oulu(tmp_path)
    options = {"camera": ["VL", "NI"], "lighting": "Weak", "last_frames": 2,
               "first_neutral": True, "aligned": True}
    records, _ = read("oulu", tmp_path, options)
    expected = oulu_expected(truth, ("VL", "NI"), ("Weak",), 2, True, True)
    assert rows(records) == expected
    assert {r.label for r in records} >= {labels.index("neutral"), labels.index("sad")}


def test_oulu_short_sequence_never_labels_a_frame_twice(tmp_path):
    truth = make_oulu(tmp_path)
    records, _ = read("oulu", tmp_path, {"first_neutral": True, "last_frames": 2})
    short = [r for r in records if r.sequence == "VL/Strong/P002/Surprise"]
    assert sorted((r.frame, r.label) for r in short) == [(0, labels.index("surprise")),
                                                         (1, labels.index("surprise"))]
    assert rows(records) == oulu_expected(truth, last=2, first_neutral=True)


def test_oulu_image_set_at_root_or_chosen(tmp_path):
    flat = tmp_path / "flat"
    truth = make_oulu(flat, image_set="")
    records, _ = read("oulu", flat)
    assert rows(records) == oulu_expected(truth)

    two = tmp_path / "two"
    make_oulu(two, "OriginalImg")
    other = make_oulu(two, "PreProcessImg", n_frames=4)
    with pytest.raises(DatasetError, match="several Oulu-CASIA image sets.*image_set"):
        read("oulu", two)
    records, _ = read("oulu", two, {"image_set": "PreProcessImg"})
    assert rows(records) == oulu_expected(other)


def test_oulu_bad_options_and_missing_condition(tmp_path):
    make_oulu(tmp_path)
    with pytest.raises(DatasetError, match="escapes the dataset root"):
        read("oulu", tmp_path, {"image_set": "../elsewhere"})
    with pytest.raises(DatasetError, match="camera must be"):
        read("oulu", tmp_path, {"camera": "IR"})
    with pytest.raises(DatasetError, match="Dark"):
        read("oulu", tmp_path, {"lighting": "Dark"})   # not in this copy: named, not ignored


# --- SFEW 2.0 -----------------------------------------------------------------------------

def test_sfew_reads_class_folders_right_under_the_split_folders(tmp_path):
    truth = make_sfew(tmp_path, nested=False)
    records, skips = read("sfew", tmp_path)
    assert rows(records) == sfew_expected(truth)
    assert kinds(skips.items) == Counter(truth["skips"])
    assert kinds(skips.notes, "note") == Counter(truth["notes"])


def test_sfew_val_as_test_and_full_frames(tmp_path):
    truth = make_sfew(tmp_path)
    records, _ = read("sfew", tmp_path, {"val_split": "test", "aligned": False})
    assert rows(records) == sfew_expected(truth, val_split="test", aligned=False)
    with pytest.raises(DatasetError, match="val_split"):
        read("sfew", tmp_path, {"val_split": "holdout"})


def test_sfew_corrupt_image_is_refused_when_decoded(tmp_path):
    truth = make_sfew(tmp_path)
    records, _ = read("sfew", tmp_path)
    corrupt = [r for r in records if r.image == truth["corrupt"]]
    assert len(corrupt) == 1
    with pytest.raises(ImageError, match=truth["corrupt"].name):
        load_image(corrupt[0].image)


# --- AFEW ---------------------------------------------------------------------------------

def test_afew_duplicate_clip_names_the_first_and_records_have_no_box(tmp_path):
    truth = make_afew(tmp_path)
    records, skips = read("afew", tmp_path)
    assert "Train_AFEW/Angry/000046280.avi" in reason_for(skips, truth["skips"][2][0], "duplicate clip")
    assert all(r.box is None and r.landmarks is None for r in records)


def test_afew_stride_and_max_frames(tmp_path):
    truth = make_afew(tmp_path)
    records, _ = read("afew", tmp_path, {"frame_stride": 2, "max_frames": 0, "val_split": "test"})
    assert rows(records) == afew_expected(truth, lambda n: range(0, n, 2), "test")
    records, _ = read("afew", tmp_path, {"max_frames": 2})
    assert rows(records) == afew_expected(truth, lambda n: [0, n - 1])
    with pytest.raises(DatasetError, match="frame_stride"):
        read("afew", tmp_path, {"frame_stride": 0})


def test_afew_record_decodes_to_its_own_frame(tmp_path):
    truth = make_afew(tmp_path)
    records, _ = read("afew", tmp_path)
    clip = truth["clips"][0]
    brightness = np.array(clip["brightness"])
    mine = sorted((r for r in records if r.sequence == clip["clip"]), key=lambda r: r.frame)
    assert [r.frame for r in mine] == list(range(len(brightness)))
    for record in mine:
        image = load_image(record.image, record.frame)
        assert image.shape == (24, 32, 3)
        mean = image.mean()
        assert abs(mean - brightness[record.frame]) < 10
        assert int(np.argmin(abs(brightness - mean))) == record.frame


# --- Aff-Wild2 ----------------------------------------------------------------------------

def test_affwild2_reads_the_abaw2_layout(tmp_path):
    truth = make_affwild2(tmp_path, "abaw2")
    records, skips = read("affwild2", tmp_path, {"frame_stride": 1})
    assert rows(records) == affwild2_expected(truth)
    assert kinds(skips.items) == Counter(truth["skips"])
    assert {r.subject for r in records} >= {"video59_left", "video59_right"}


def test_affwild2_skip_reasons_name_file_line_and_counts(tmp_path):
    truth = make_affwild2(tmp_path)
    _, skips = read("affwild2", tmp_path, {"frame_stride": 1})
    train = f"{truth['expr']}/Train_Set"
    assert "badline.txt line 4" in reason_for(skips, f"{train}/badline.txt", "malformed annotation")
    assert "'x1'" in reason_for(skips, f"{train}/badline.txt", "malformed annotation")
    assert "header" in reason_for(skips, f"{train}/noheader.txt", "malformed annotation")
    assert "holds 9" in reason_for(skips, f"{train}/range.txt", "label out of range")
    assert "cropped_aligned/noimages/" in reason_for(skips, f"{train}/noimages.txt", "missing image folder")
    video = truth["videos"]["10-60-1280x720"]
    codes = video["codes"]
    ignored = reason_for(skips, video["ann"], "ignored frames")
    assert f"{codes.count(-1)} of {len(codes)} sampled" in ignored
    other = reason_for(skips, video["ann"], "other class")
    assert f"{codes.count(7)} of {len(codes)} sampled" in other
    missing = reason_for(skips, video["ann"], "missing image")
    assert f"{len(video['missing'])} labelled frames" in missing
    assert f"frames {min(video['missing'])}" in missing


def test_affwild2_stride_and_val_as_test(tmp_path):
    truth = make_affwild2(tmp_path)
    records, skips = read("affwild2", tmp_path, {"frame_stride": 2, "val_split": "test"})
    assert rows(records) == affwild2_expected(truth, stride=2, val_split="test")
    video = truth["videos"]["10-60-1280x720"]
    sampled = video["codes"][::2]
    assert ((video["ann"], "ignored frames") in kinds(skips.items)) == (-1 in sampled)
    assert len(records) < len(affwild2_expected(truth))


def test_affwild2_layout_errors(tmp_path):
    truth = make_affwild2(tmp_path)
    with pytest.raises(DatasetError, match="escapes the dataset root"):
        read("affwild2", tmp_path, {"images": "../../etc"})
    with pytest.raises(DatasetError, match="escapes the dataset root"):
        read("affwild2", tmp_path, {"annotations": "../EXPR_Set"})
    records, _ = read("affwild2", tmp_path, {"annotations": truth["expr"], "frame_stride": 1})
    assert rows(records) == affwild2_expected(truth)
    (tmp_path / "copy" / "EXPR_Recognition_Challenge").mkdir(parents=True)
    with pytest.raises(DatasetError, match="several Aff-Wild2"):
        read("affwild2", tmp_path)
