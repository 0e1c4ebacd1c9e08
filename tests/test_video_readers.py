"""Readers for Oulu-CASIA, SFEW 2.0, AFEW and Aff-Wild2 on tiny copies of their real layouts."""
from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from video_dataset_fixtures import (AFFWILD2_CODES, EMOTIW_CLASSES, OULU_CLASSES, make_affwild2,
                                make_afew, make_oulu, make_sfew)
from mrfer.data import labels
from mrfer.data.datasets import read
from mrfer.data.faces import load_image
from mrfer.errors import ImageError
from mrfer.errors import DatasetError


def rows(records):
    """Comparable view of records: everything but the image itself."""
    return sorted((r.source, r.label, r.subject, r.split, r.sequence, r.frame, r.aligned)
                  for r in records)


def kinds(items, key="reason"):
    """Multiset of (source, reason kind) pairs from SkipLog items or notes."""
    return Counter((item["source"], item[key].split(":")[0]) for item in items)


def reason_for(skips, source, kind):
    found = [i["reason"] for i in skips.items
             if i["source"] == source and i["reason"].startswith(kind)]
    assert len(found) == 1, (source, kind, skips.items)
    return found[0]


# --- Oulu-CASIA ---------------------------------------------------------------------------

def oulu_expected(truth, cameras=("VL",), lightings=("Strong",), last=3, first_neutral=False,
                  aligned=False):
    expected = []
    for seq in truth["sequences"]:
        if seq["camera"] not in cameras or seq["lighting"] not in lightings:
            continue
        frames = seq["frames"]
        n_last = min(last, len(frames))
        n_neutral = min(int(first_neutral), len(frames) - n_last)
        chosen = [(f, "neutral") for f in frames[:n_neutral]]
        chosen += [(f, OULU_CLASSES[seq["cls"]]) for f in frames[len(frames) - n_last:]]
        for frame, name in chosen:
            expected.append((f"{seq['dir']}/{frame:03d}.jpeg", labels.index(name), seq["subject"],
                             None, f"{seq['camera']}/{seq['lighting']}/{seq['subject']}/{seq['cls']}",
                             frame, aligned))
    return sorted(expected)


def test_oulu_default_reads_last_frames_of_vl_strong(tmp_path):
    truth = make_oulu(tmp_path)
    records, skips = read("oulu", tmp_path)
    assert rows(records) == oulu_expected(truth)
    assert kinds(skips.items) == Counter(truth["skips"])
    assert kinds(skips.notes, "note") == Counter(truth["notes"])
    assert "Smile" in reason_for(skips, truth["skips"][0][0], "unknown class folder")
    assert all(r.image.is_file() for r in records)


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

@pytest.mark.parametrize("nested", [True, False])
def test_sfew_reads_aligned_faces_with_splits(tmp_path, nested):
    truth = make_sfew(tmp_path, nested=nested)
    records, skips = read("sfew", tmp_path)
    expected = sorted((i["source"], labels.index(EMOTIW_CLASSES[i["cls"]]), None, i["split"],
                       None, None, True) for i in truth["images"])
    assert rows(records) == expected
    assert kinds(skips.items) == Counter(truth["skips"])
    assert kinds(skips.notes, "note") == Counter(truth["notes"])


def test_sfew_val_as_test_and_full_frames(tmp_path):
    truth = make_sfew(tmp_path)
    records, _ = read("sfew", tmp_path, {"val_split": "test", "aligned": False})
    splits = Counter(r.split for r in records)
    assert splits == Counter("test" if i["split"] == "val" else "train" for i in truth["images"])
    assert not any(r.aligned for r in records)
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

def afew_expected(truth, frames_of, val_split="val"):
    expected = []
    for clip in truth["clips"]:
        split = val_split if clip["split"] == "val" else clip["split"]
        for frame in frames_of(len(clip["brightness"])):
            expected.append((f"{clip['source']}#{frame}", labels.index(EMOTIW_CLASSES[clip["cls"]]),
                             None, split, clip["clip"], frame, False))
    return sorted(expected)


def test_afew_reads_every_frame_of_each_clip(tmp_path):
    truth = make_afew(tmp_path)
    records, skips = read("afew", tmp_path)
    assert rows(records) == afew_expected(truth, lambda n: range(n))
    assert kinds(skips.items) == Counter(truth["skips"])
    assert kinds(skips.notes, "note") == Counter(truth["notes"])
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

def affwild2_expected(truth, stride=1, val_split="val"):
    expected = []
    for name, video in truth["videos"].items():
        split = val_split if video["split"] == "val" else video["split"]
        for frame, code in enumerate(video["codes"], start=1):
            if (frame - 1) % stride or code not in AFFWILD2_CODES or frame in video["missing"]:
                continue
            expected.append((f"cropped_aligned/{name}/{frame:05d}.jpg",
                             labels.index(AFFWILD2_CODES[code]), name, split, name, frame, True))
    return sorted(expected)


@pytest.mark.parametrize("release", ["abaw3", "abaw2"])
def test_affwild2_reads_labelled_frames(tmp_path, release):
    truth = make_affwild2(tmp_path, release)
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


# --- every reader -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["oulu", "sfew", "afew", "affwild2"])
def test_empty_or_missing_dataset_folder_is_an_error_naming_it(tmp_path, name):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match=re.escape(str(empty))):
        read(name, empty)
    with pytest.raises(DatasetError, match=re.escape(str(tmp_path / "missing"))):
        read(name, tmp_path / "missing")
