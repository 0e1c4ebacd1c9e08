"""Readers for FER2013, FER+, RAF-DB, AffectNet, ExpW and JAFFE on tiny datasets in their
official layouts (tests/photo_dataset_fixtures.py), bad cases included: each reader's options,
layouts and exact skip messages. What every reader must do is checked in test_readers.py."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from photo_dataset_fixtures import (ferplus_expected, make_affectnet, make_expw, make_fer2013,
                                    make_fer2013_duplicates, make_fer2013_folders, make_ferplus, make_jaffe,
                                    make_rafdb)

from mrfer.data.datasets import read
from mrfer.data.records import DUPLICATE_FIELDS
from mrfer.errors import DatasetError

FIELDS = ("source", "label", "split", "subject", "box", "aligned")


def as_dicts(records) -> list[dict]:
    out = [{name: getattr(r, name) for name in FIELDS} for r in records]
    for d in out:
        d["box"] = tuple(d["box"]) if d["box"] is not None else None
    return sorted(out, key=lambda d: d["source"])


def by_source(items: list[dict]) -> list[dict]:
    return sorted(items, key=lambda d: d["source"])


def skip_pairs(skips) -> list[tuple[str, str]]:
    return sorted((item["source"], item["reason"]) for item in skips.items)


def note_pairs(skips) -> list[tuple[str, str]]:
    return sorted((item["source"], item["note"]) for item in skips.notes)


def duplicate_rows(skips) -> list[tuple] | None:
    """The reader's duplicates list as tuples, None if the reader does not look for them."""
    if skips.duplicates is None:
        return None
    return [tuple(row[name] for name in DUPLICATE_FIELDS) for row in skips.duplicates]


def assert_read(records, skips, made: dict) -> None:
    assert as_dicts(records) == by_source(made["records"])
    assert skip_pairs(skips) == sorted(made["skips"])
    assert note_pairs(skips) == sorted(made.get("notes", []))
    assert duplicate_rows(skips) == made.get("duplicates")


DROP_REASON = "duplicate of a training image: same content as {} (duplicates is 'drop_from_eval')"


# ----------------------------------------------------------------------------- FER2013

@pytest.mark.parametrize("csv_name", ["fer2013.csv", "icml_face_data.csv"])
def test_fer2013_csv_reads_rows_splits_pixels_and_reports_bad_rows(tmp_path, csv_name):
    made = make_fer2013(tmp_path / "fer2013", n_per_class=5, csv_name=csv_name)
    records, skips = read("fer2013", tmp_path / "fer2013")
    assert_read(records, skips, made)
    assert {r.split for r in records} == {"train", "val", "test"}
    for record in records:
        assert record.image.dtype == np.uint8 and record.image.shape == (48, 48)
        assert np.array_equal(record.image, made["images"][record.source])


def test_fer2013_public_test_can_be_a_test_split(tmp_path):
    made = make_fer2013(tmp_path, n_per_class=5)
    records, _ = read("fer2013", tmp_path, {"public_test": "test"})
    want = [dict(r, split="test" if r["split"] == "val" else r["split"]) for r in made["records"]]
    assert as_dicts(records) == by_source(want)
    assert "val" not in {r.split for r in records}


def test_fer2013_blank_images_kept_when_asked(tmp_path):
    made = make_fer2013(tmp_path, n_per_class=1)
    records, skips = read("fer2013", tmp_path, {"drop_blank": False})
    blank = [r for r in records if r.source == made["blank"]]
    assert len(blank) == 1 and blank[0].label == 6 and not blank[0].image.any()
    assert made["blank"] not in {item["source"] for item in skips.items}
    assert len(records) == len(made["records"]) + 1


def test_fer2013_image_folders_keep_official_split_from_file_names(tmp_path):
    made = make_fer2013_folders(tmp_path, n_per_class=5)
    records, skips = read("fer2013", tmp_path)
    assert_read(records, skips, made)
    assert {r.split for r in records} == {"train", "val", "test"}
    assert all(Path(r.image).is_file() and r.aligned for r in records)


def test_fer2013_layout_option_picks_between_csv_and_folders(tmp_path):
    from_csv = make_fer2013(tmp_path, n_per_class=1, bad=False)
    from_folders = make_fer2013_folders(tmp_path, n_per_class=1, bad=False)
    assert as_dicts(read("fer2013", tmp_path)[0]) == by_source(from_csv["records"])
    assert as_dicts(read("fer2013", tmp_path, {"layout": "folders"})[0]) == by_source(from_folders["records"])
    with pytest.raises(DatasetError, match="layout must be one of"):
        read("fer2013", tmp_path, {"layout": "zip"})


def test_fer2013_duplicates_are_listed_and_kept_by_default(tmp_path):
    made = make_fer2013_duplicates(tmp_path)
    records, skips = read("fer2013", tmp_path)
    assert as_dicts(records) == by_source(made["records"])              # the official split
    assert [r.source for r in records] == [r["source"] for r in made["records"]]   # in file order
    assert len(skips) == 0 and skips.notes == []
    assert duplicate_rows(skips) == made["duplicates"]
    # within train, train/val (early in the file), train/val, train/test, val/test
    assert skips.duplicate_summary() == {"images": 5, "across_splits": 4, "dropped_from_eval": 0}
    assert read("fer2013", tmp_path, {"duplicates": "keep"})[1].duplicates == skips.duplicates


def test_fer2013_drop_from_eval_skips_eval_copies_of_training_images(tmp_path):
    made = make_fer2013_duplicates(tmp_path)
    records, skips = read("fer2013", tmp_path, {"duplicates": "drop_from_eval"})
    dropped = dict(made["dropped"])
    assert as_dicts(records) == by_source([r for r in made["records"] if r["source"] not in dropped])
    assert skip_pairs(skips) == sorted((s, DROP_REASON.format(first)) for s, first in dropped.items())
    assert skips.reasons() == {"duplicate of a training image": 3}
    assert duplicate_rows(skips) == [row[:4] + ("dropped" if row[0] in dropped else "kept",)
                                     for row in made["duplicates"]]
    assert skips.duplicate_summary() == {"images": 5, "across_splits": 4, "dropped_from_eval": 3}
    train = {r.image.tobytes() for r in records if r.split == "train"}
    assert not any(r.image.tobytes() in train for r in records if r.split != "train")


def test_fer2013_folders_drop_from_eval(tmp_path):
    made = make_fer2013_folders(tmp_path, n_per_class=5)
    (copy, first, *_), = made["duplicates"]
    records, skips = read("fer2013", tmp_path, {"duplicates": "drop_from_eval"})
    assert as_dicts(records) == by_source([r for r in made["records"] if r["source"] != copy])
    assert skip_pairs(skips) == sorted(made["skips"] + [(copy, DROP_REASON.format(first))])
    assert duplicate_rows(skips) == [(copy, first, "test", "train", "dropped")]


# ----------------------------------------------------------------------------- FER+

@pytest.mark.parametrize("vote", ["majority", "plurality"])
def test_ferplus_labels_by_vote_and_skips_unknown_nf_and_bad_rows(tmp_path, vote):
    made = make_ferplus(tmp_path)
    records, skips = read("ferplus", tmp_path, {"vote": vote})
    want_records, want_skips = ferplus_expected(made, vote)
    assert as_dicts(records) == by_source(want_records)
    assert skip_pairs(skips) == sorted(want_skips)
    assert 7 in {r.label for r in records}                       # contempt kept as index 7
    assert all(r.image.shape == (48, 48) for r in records)
    copy, first = made["duplicate"]
    assert duplicate_rows(skips) == [(copy, first, "test", "train", "kept")]


def test_ferplus_drop_from_eval_skips_the_test_copy_of_a_training_image(tmp_path):
    made = make_ferplus(tmp_path)
    copy, first = made["duplicate"]
    records, skips = read("ferplus", tmp_path, {"duplicates": "drop_from_eval"})
    want_records, want_skips = ferplus_expected(made, "majority")
    assert as_dicts(records) == by_source([r for r in want_records if r["source"] != copy])
    assert skip_pairs(skips) == sorted(want_skips + [(copy, DROP_REASON.format(first))])
    assert duplicate_rows(skips) == [(copy, first, "test", "train", "dropped")]


def test_ferplus_min_votes_drops_weak_winners(tmp_path):
    made = make_ferplus(tmp_path)
    records, skips = read("ferplus", tmp_path, {"min_votes": 9})
    want_records, want_skips = ferplus_expected(made, "majority", min_votes=9)
    assert as_dicts(records) == by_source(want_records)
    assert skip_pairs(skips) == sorted(want_skips)
    assert len(records) < len(ferplus_expected(made, "majority")[0])


def test_ferplus_needs_both_files_with_the_same_row_count(tmp_path):
    make_ferplus(tmp_path)
    new_csv = tmp_path / "fer2013new.csv"
    lines = new_csv.read_text().splitlines()
    new_csv.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DatasetError, match="row order"):
        read("ferplus", tmp_path)
    new_csv.unlink()
    with pytest.raises(DatasetError, match="fer2013new.csv"):
        read("ferplus", tmp_path)
    with pytest.raises(DatasetError, match="vote must be one of"):
        read("ferplus", tmp_path, {"vote": "mean"})


# ----------------------------------------------------------------------------- RAF-DB

@pytest.mark.parametrize("images", ["aligned", "original"])
def test_rafdb_reads_label_file_images_and_splits(tmp_path, images):
    made = make_rafdb(tmp_path, n_per_class=4, images=images)
    records, skips = read("rafdb", tmp_path, {"images": images})
    assert_read(records, skips, made)
    assert {r.split for r in records} == {"train", "test"}
    assert all(Path(r.image).is_file() for r in records)


def test_rafdb_accepts_the_basic_top_folder(tmp_path):
    made = make_rafdb(tmp_path, n_per_class=2, basic_folder=True)
    records, skips = read("rafdb", tmp_path)
    assert_read(records, skips, made)
    assert all(r.source.startswith("basic/Image/aligned/") for r in records)


def test_rafdb_missing_label_file_is_named(tmp_path):
    (tmp_path / "Image/aligned").mkdir(parents=True)
    with pytest.raises(DatasetError, match="list_patition_label.txt"):
        read("rafdb", tmp_path)
    with pytest.raises(DatasetError, match="images must be one of"):
        read("rafdb", tmp_path, {"images": "cropped"})


# ----------------------------------------------------------------------------- AffectNet

def test_affectnet_reads_both_lists_with_boxes(tmp_path):
    made = make_affectnet(tmp_path, n_per_class=2)
    records, skips = read("affectnet", tmp_path)
    assert_read(records, skips, made)
    assert all(r.landmarks is None and not r.aligned for r in records)
    # validation.csv has no header: its first line is a face, read into the test split.
    first_validation = next(r for r in made["records"] if r["split"] == "test")
    assert first_validation in as_dicts(records)
    assert (tmp_path / "Manually_Annotated_file_lists/validation.csv").read_text().startswith(
        first_validation["source"].split("/", 1)[1])


def test_affectnet_landmarks_option(tmp_path):
    made = make_affectnet(tmp_path, n_per_class=1)
    records, skips = read("affectnet", tmp_path, {"landmarks": True})
    bad_image, bad_source, bad_reason = made["bad_landmarks"]
    want = [r for r in made["records"] if r["source"] != bad_image]
    assert as_dicts(records) == by_source(want)
    assert skip_pairs(skips) == sorted(made["skips"] + [(bad_source, bad_reason)])
    for record in records:
        assert record.landmarks.shape == (68, 2)
        assert np.allclose(record.landmarks, made["landmarks"][record.source], atol=0.006)


def test_affectnet_finds_the_unpacked_image_folder_and_needs_lists(tmp_path):
    made = make_affectnet(tmp_path / "a", n_per_class=1, bad=False,
                          images_dir="Manually_Annotated/Manually_Annotated_Images")
    records, _ = read("affectnet", tmp_path / "a")
    assert as_dicts(records) == by_source(made["records"])
    (tmp_path / "b" / "Manually_Annotated_Images").mkdir(parents=True)
    with pytest.raises(DatasetError, match="Manually_Annotated_file_lists"):
        read("affectnet", tmp_path / "b")


# ----------------------------------------------------------------------------- ExpW

def test_expw_one_record_per_face_line_with_boxes(tmp_path):
    made = make_expw(tmp_path)
    records, skips = read("expw", tmp_path)
    assert_read(records, skips, made)
    photos = [r.source.split("#")[0] for r in records]
    assert any(photos.count(p) > 1 for p in photos)             # several faces in one photo


def test_expw_min_confidence(tmp_path):
    made = make_expw(tmp_path, bad=False)
    threshold = float(np.median(list(made["confidence"].values())))
    records, skips = read("expw", tmp_path, {"min_confidence": threshold})
    kept = [r for r in made["records"] if made["confidence"][r["source"]] >= threshold]
    assert as_dicts(records) == by_source(kept)
    assert 0 < len(kept) < len(made["records"])
    assert skips.reasons() == {"low confidence": len(made["records"]) - len(kept)}


def test_expw_missing_label_file_is_named(tmp_path):
    (tmp_path / "image/origin").mkdir(parents=True)
    with pytest.raises(DatasetError, match="label.lst"):
        read("expw", tmp_path)


# ----------------------------------------------------------------------------- JAFFE

@pytest.mark.parametrize("folder", ["jaffedbase", ""])
def test_jaffe_subject_and_expression_from_file_names(tmp_path, folder):
    made = make_jaffe(tmp_path, folder=folder)
    records, skips = read("jaffe", tmp_path)
    assert_read(records, skips, made)
    assert {r.subject for r in records} == {"KA", "KL", "KM", "YM", "NA", "TM"}
    assert not any(r.aligned for r in records)


# ----------------------------------------------------------------------------- CSV label files

@pytest.mark.parametrize("name, rel", [("fer2013", "fer2013.csv"),
                                       ("affectnet", "Manually_Annotated_file_lists/training.csv")])
def test_unclosed_csv_quote_is_a_dataset_error_naming_the_file(tmp_path, name, rel):
    (tmp_path / "Manually_Annotated_Images").mkdir()
    path = tmp_path / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("emotion,pixels,Usage\n0,\"" + "1 " * 100_000 + "\n")
    with pytest.raises(DatasetError, match=f"{path.name}: unreadable CSV"):
        read(name, tmp_path)
